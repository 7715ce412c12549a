// The end of an image written to a destination: made durable when it is a file or a device,
// and every error the file system reports only at that point (a full thin disk, quota, NFS)
// a failure rather than exit 0.
#pragma once

#include <functional>
#include <string>

namespace qcowfs {

// Runs `write` (which writes an image at fd's offset), then fsyncs fd when it is a regular
// file or a block device and closes it (the caller must not close it again), each checked;
// throws std::system_error naming `name`. When `write` or the fsync fails and fd is a regular file,
// the file is first cut back to where the image began, and the error goes on: an image cut short
// still opens (qemu-img reads the clusters past the end of the file as zeros), so no part of one
// may be left to be taken for the whole.
void WriteDestination(int fd, const std::string& name, const std::function<void()>& write);

}  // namespace qcowfs
