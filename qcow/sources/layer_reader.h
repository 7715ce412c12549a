// Reading one layer of a chain: its extents from the L1/L2 tables (qcow2), the BAT and
// sector bitmaps (VHD) or SEEK_DATA/SEEK_HOLE (raw, fixed VHD), and its bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qcow/io/file_io.h"
#include "qcow/sources/image_chain.h"

namespace qcow {

// Decompresses the compressed cluster of `layer` at [host, host_end) (the span may run past
// the end of the file: the rest reads as zeros, as QEMU reads it) into `out` (one cluster).
// Throws std::system_error (EIO) naming the file and offset when the data is damaged.
void ReadCompressedCluster(const Layer& layer, uint64_t host, uint64_t host_end,
                           std::vector<uint8_t>& out);

}  // namespace qcow
