// Opening what `--export` / `--source` names: a raw disk, or a qcow2 image or a VHD with its
// chain.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qcow/export/source.h"

namespace qcow {

enum class SourceFormat { kAuto, kRaw, kQcow2, kVhd };

struct SourceOptions {
  // kAuto: qcow2 when the file starts with the qcow2 magic, a VHD when it ends with a VHD
  // footer (or starts with the copy of one), raw otherwise.
  SourceFormat format = SourceFormat::kAuto;
  bool direct = false;  // raw sources: read with O_DIRECT (no splice, no page cache)
  // Directories searched for backing files that are not where their names point.
  std::vector<std::string> search_path;
  std::function<void(const std::string&)> warn;  // e.g. a layer's dirty bit
};

// Opens the source at path read-only. Throws std::system_error when a file cannot be read,
// UsageError when it is neither a regular file nor a block device, and FormatError naming
// the file and the reason when a qcow2 or VHD chain cannot be read.
std::unique_ptr<Source> OpenSource(const std::string& path, const SourceOptions& options);

}  // namespace qcow
