// The end of an image written to a destination: made durable when it is a file or a device,
// and every error the file system reports only at that point (a full thin disk, quota, NFS)
// a failure rather than exit 0.
#pragma once

#include <string>

namespace qcowfs {

// Fsyncs fd when it is a regular file or a block device, then closes it (the caller must
// not close it again), each checked; throws std::system_error naming `name`.
void EndDestination(int fd, const std::string& name);

}  // namespace qcowfs
