// What `qcowfs check` and `qcowfs info` report about a qcow2 file: check runs the whole
// import decoder over it without writing anything; info reads only cluster 0 and the L1 and
// L2 tables, as qemu-img info reads only what it needs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qcow/format/header.h"
#include "qcow/format/image_header.h"

namespace qcow {

struct ImageReport {
  uint64_t file_size = 0;
  std::optional<QcowHeader> header;   // the fixed fields, when the magic and version are right
  std::optional<ImageInfo> info;      // when the header passed validation
  std::string backing_file;           // as named in cluster 0, if any
  uint64_t data_bytes = 0;            // guest bytes the image holds data for
  std::vector<std::string> warnings;  // e.g. the dirty bit
  std::string problem;                // why it would not import; empty if it would
};

// Reads the file at path and decodes it completely into nowhere (as a delta import would
// with `delta`). Throws std::system_error only when the file cannot be read, and UsageError
// (before opening it) when it is neither a regular file nor a block device; problems with
// the image go into the report.
ImageReport CheckImage(const std::string& path, bool delta = false);

// Reads cluster 0 and the L1 and L2 tables of the file at path with pread, without decoding
// data: the header, data_bytes, and as `problem` anything the header or the tables show
// (refusals, tables or data past the end of the file). Throws std::system_error only when
// the file cannot be read.
ImageReport InspectImage(const std::string& path);

}  // namespace qcow
