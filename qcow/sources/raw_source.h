// Raw disks as export sources: a regular file or a block device, opened read-only.
#pragma once

#include <memory>
#include <string>

#include "qcow/export/source.h"

namespace qcow {

// Opens a regular file or block device read-only as raw bytes; `direct` reads with O_DIRECT
// (no splice, no page cache). Throws std::system_error when it cannot
// be opened or sized and UsageError when it is neither a regular file nor a block device.
//  - regular file: allocation from SEEK_DATA/SEEK_HOLE; a cluster counts when any of its
//    bytes is data;
//  - block device: size from BLKGETSIZE64; every cluster counts.
std::unique_ptr<Source> OpenRawSource(const std::string& path, bool direct);

}  // namespace qcow
