// Opening and planning an export, shared by `mount --export` and `stream`.
#pragma once

#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include "qcow/export/export_layout.h"
#include "qcow/export/source.h"
#include "qcow/io/unique_fd.h"
#include "qcow/sources/allocation_map.h"
#include "qcow/sources/image_chain.h"
#include "qcow/sources/open_source.h"

namespace qcowfs {

struct ExportArgs {
  std::string cluster_size = "64K";
  bool scan_zeros = false;
  bool direct = false;
  std::string source_format;    // "", "raw", "qcow2", "vhd" or "hybrid" (DEVICE:METADATA)
  std::string search_path;      // --path: directories separated by ':'
  std::string allocation_from;  // qcow2/VHD chain or qemu-img map JSON (path or fd:N)
  std::string relative_to;      // a delta over this disk
  std::string backing_name;     // the delta's backing file name ("": the chain's own)
  std::string backing_format;   // the format it names ("": the base's own, or by the name)
  std::string changed_blocks;   // a delta of the blocks this CBT bitmap names (path or fd:N)
};

// A file the command writes (the stream's destination, the mount's import target), which
// the export must not read.
struct WrittenFile {
  std::string role;  // "the destination", "--import"
  std::string path;  // as given
  struct stat st;
};

struct PlannedExport {
  std::unique_ptr<qcow::Source> source;
  std::unique_ptr<qcow::ExportLayout> layout;
  // The chain --allocation-from names (a raw source's metadata), when it is one.
  std::unique_ptr<qcow::ImageChain> metadata;
  // The delta's base: layers of the source's chain or of `metadata` from base_depth down
  // (base_chain), or a disk opened to compare with (base).
  const qcow::ImageChain* base_chain = nullptr;
  uint32_t base_depth = 0;
  std::unique_ptr<qcow::Source> base;
  // Every file the export reads (source, layers, metadata, base), and those it must not.
  struct File {
    std::string path;
    struct stat st;
  };
  std::vector<File> reads;
  std::vector<WrittenFile> written;
  // The files that loop devices among the chains' layers read, locked for reading as long
  // as the plan lives (a raw source holds its own).
  std::vector<qcow::UniqueFd> held;
};

// Returns the library's options for opening the source (format, search path, warnings on
// stderr). Throws UsageError for an unknown --source-format.
qcow::SourceOptions SourceOptionsFor(const ExportArgs& args);

// Opens the source read-only, maps its clusters (from --allocation-from when given,
// scanning for zeros if asked, with progress on stderr) and plans the image. Throws
// UsageError as soon as a file it opens is one of `written`, before it reads it through;
// UsageError/FormatError/std::system_error otherwise.
PlannedExport PlanExport(const std::string& path, const ExportArgs& args,
                         const std::vector<WrittenFile>& written = {});

// Returns the format a delta names its backing file in: `given` (--backing-format: raw,
// qcow2, or vpc/vhd), else the base's own (`found`), else what backing_name's extension
// says (.qcow2 or .qcow, .vhd, else raw). Throws UsageError for another `given`.
std::string BackingFormatArg(const std::string& given, const std::string& found,
                             const std::string& backing_name);

// Reads --changed-blocks `spec` (a file, or fd:N among the descriptors the command
// inherited) for a disk of disk_size bytes. Throws UsageError/FormatError/std::system_error.
qcow::DataRanges ReadChangedBlocksArg(const std::string& spec, uint64_t disk_size);

// Throws UsageError when `written` is one of the files p reads.
void RefuseWritingOver(const PlannedExport& p, const WrittenFile& written);

}  // namespace qcowfs
