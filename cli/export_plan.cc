#include "cli/export_plan.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>

#include "cli/inherited_fds.h"
#include "cli/size_arg.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/io/disk_lock.h"
#include "qcow/io/file_io.h"
#include "qcow/sources/allocation_map.h"
#include "qcow/sources/chain_source.h"
#include "qcow/sources/changed_blocks.h"
#include "qcow/sources/delta.h"
#include "qcow/sources/open_source.h"
#include "qcow/sources/raw_source.h"

namespace qcowfs {
namespace {

uint32_t ClusterBits(const std::string& text) {
  if (const auto bits = qcow::ClusterBitsOf(ParseSize(text))) return *bits;
  throw qcow::UsageError("--cluster-size is " + text +
                         "; qcow2 allows a power of two from 512 to 2M");
}

// Prints progress on stderr, each line starting with `what`: a live line on a terminal, a
// line per 10% otherwise.
qcow::ProgressFn Progress(const std::string& what) {
  const bool tty = isatty(STDERR_FILENO);
  auto last = std::make_shared<int>(-1);
  return [=](uint64_t done, uint64_t total) {
    int pct = total ? static_cast<int>(done * 100 / total) : 100;
    if (pct == *last || (!tty && pct % 10 != 0 && pct != 100)) return;
    *last = pct;
    std::fprintf(stderr, "%s%s%3d%% (%s of %s)%s", tty ? "\r" : "", what.c_str(), pct,
                 HumanSize(done).c_str(), HumanSize(total).c_str(), tty && pct < 100 ? "" : "\n");
  };
}

qcow::ProgressFn ScanProgress(const std::string& source) {
  return Progress("scanning " + source + " for zero clusters: ");
}

qcow::SourceOptions OptionsFor(const ExportArgs& a) {
  qcow::SourceOptions o;
  if (a.source_format == "raw") {
    o.format = qcow::SourceFormat::kRaw;
  } else if (a.source_format == "qcow2") {
    o.format = qcow::SourceFormat::kQcow2;
  } else if (a.source_format == "vhd" || a.source_format == "vpc") {
    o.format = qcow::SourceFormat::kVhd;
  } else if (!a.source_format.empty() && a.source_format != "hybrid") {
    throw qcow::UsageError("--source-format is '" + a.source_format +
                           "'; qcowfs exports from 'raw', 'qcow2', 'vhd' or 'hybrid' sources");
  }
  o.direct = a.direct;
  for (size_t from = 0; from < a.search_path.size();) {
    const size_t colon = std::min(a.search_path.find(':', from), a.search_path.size());
    if (colon > from) o.search_path.push_back(a.search_path.substr(from, colon - from));
    from = colon + 1;
  }
  o.warn = [](const std::string& w) { std::fprintf(stderr, "qcowfs: warning: %s\n", w.c_str()); };
  return o;
}

// Throws UsageError when `w` is the file the export reads at path.
void RefuseSame(const WrittenFile& w, const std::string& path, const struct stat& st) {
  if (!qcow::SameDisk(w.st, st)) return;
  throw qcow::UsageError(
      w.role + " " + w.path + " is " +
      (path == w.path ? std::string() : path + qcow::SameDiskNote(w.st, st) + ", ") +
      "a file the export reads; refusing to write over it");
}

void AddRead(PlannedExport& p, const std::string& path, const struct stat& st) {
  for (const WrittenFile& w : p.written) RefuseSame(w, path, st);
  p.reads.push_back({path, st});
}

void AddReads(PlannedExport& p, const qcow::ImageChain& chain) {
  for (const auto& layer : chain.layers()) {
    AddRead(p, layer.path, layer.st);
    if (!S_ISBLK(layer.st.st_mode)) continue;
    // The chain checked a loop device's file when it opened the layer; held from here on.
    qcow::DiskLock lock = qcow::LockDisk(layer.fd, layer.path, qcow::DiskUse::kRead);
    for (qcow::UniqueFd& fd : lock.held) p.held.push_back(std::move(fd));
  }
}

// Adds to p.reads the files `source` (opened from path) reads: each layer of its chain, or
// the file itself.
void AddReads(PlannedExport& p, const qcow::Source& source, const std::string& path) {
  if (const qcow::ImageChain* chain = qcow::ChainOf(source)) return AddReads(p, *chain);
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) AddRead(p, path, st);
}

// Plans the delta of p.source over a.relative_to: from the chain's metadata when the base
// is one of its layers (the source's own chain, or the --allocation-from chain of a hybrid
// source), else by comparing contents. Keeps the base in p.
qcow::DeltaPlan PlanDelta(PlannedExport& p, const ExportArgs& a, const qcow::SourceOptions& options,
                          uint32_t bits) {
  const qcow::Source& source = *p.source;
  const qcow::ImageChain* chain = qcow::ChainOf(source);
  if (!chain) chain = p.metadata.get();
  if (chain) {
    if (const auto depth = qcow::FindLayer(*chain, a.relative_to)) {
      p.base_chain = chain;
      p.base_depth = *depth;
      return qcow::ChainDelta(*chain, *depth, bits);
    }
  }
  // --source-format speaks of the source: the base's own name decides its format (a guest's
  // raw base must not be read as the image its first bytes describe).
  qcow::SourceOptions base_options = options;
  base_options.format = qcow::SourceFormat::kAuto;
  p.base = qcow::OpenSource(a.relative_to, base_options);
  AddReads(p, *p.base, a.relative_to);
  qcow::DeltaPlan plan =
      qcow::ComparedDelta(source, *p.base, bits,
                          Progress("comparing " + source.name() + " with " + a.relative_to + ": "));
  plan.delta.backing_file = a.relative_to;
  if (const qcow::ImageChain* base_chain = qcow::ChainOf(*p.base)) {
    p.base_chain = base_chain;
    plan.delta.backing_format = qcow::LayerFormatName(base_chain->layers().front().format);
  } else {
    plan.delta.backing_format = "raw";
  }
  return plan;
}

// Plans the delta of p.source that --changed-blocks names: every cluster holding a changed
// block, over a base that only --backing-name names (its data may be gone).
qcow::DeltaPlan PlanChangedBlocks(PlannedExport& p, const ExportArgs& a, uint32_t bits) {
  if (!a.relative_to.empty()) {
    throw qcow::UsageError(
        "--changed-blocks and --relative-to do not go together: the bitmap says what "
        "changed since the base already");
  }
  if (a.scan_zeros) {
    throw qcow::UsageError(
        "--scan-zeros and --changed-blocks do not go together: a delta of changed blocks "
        "holds them whatever they read as");
  }
  if (a.backing_name.empty()) {
    throw qcow::UsageError(
        "--changed-blocks needs --backing-name: the delta must name the disk it applies "
        "over");
  }
  struct stat st;
  if (::stat(a.changed_blocks.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    AddRead(p, a.changed_blocks, st);
  }
  const qcow::DataRanges changed = ReadChangedBlocksArg(a.changed_blocks, p.source->size());
  qcow::DeltaPlan plan = qcow::ChangedBlocksDelta(*p.source, changed, bits);
  plan.delta.backing_file = a.backing_name;
  plan.delta.backing_format = BackingFormatArg(a.backing_format, "", a.backing_name);
  return plan;
}

}  // namespace

qcow::SourceOptions SourceOptionsFor(const ExportArgs& args) { return OptionsFor(args); }

PlannedExport PlanExport(const std::string& path, const ExportArgs& a,
                         const std::vector<WrittenFile>& written) {
  const uint32_t bits = ClusterBits(a.cluster_size);
  PlannedExport p;
  p.written = written;
  const qcow::SourceOptions options = OptionsFor(a);
  std::string disk = path, allocation = a.allocation_from;
  if (a.source_format == "hybrid") {
    // vhd-tool's spelling: --source DEVICE:METADATA.
    const size_t colon = path.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == path.size()) {
      throw qcow::UsageError("--source-format hybrid needs --source DEVICE:METADATA; got '" + path +
                             "'");
    }
    if (!allocation.empty()) {
      throw qcow::UsageError(
          "--source-format hybrid names the metadata already; drop "
          "--allocation-from");
    }
    disk = path.substr(0, colon);
    allocation = path.substr(colon + 1);
  }
  if (allocation.empty()) {
    p.source = qcow::OpenSource(disk, options);
    AddReads(p, *p.source, disk);
  } else {
    // The device is the guest view already: read raw, whatever its first bytes are. A chain
    // named as metadata is kept for a delta over one of its layers. The device is opened
    // first: its size bounds how much metadata is read.
    std::unique_ptr<qcow::Source> raw = qcow::OpenRawSource(disk, a.direct);
    AddReads(p, *raw, disk);
    qcow::DataRanges data;
    if (const std::optional<int> fd = qcow::DescriptorSpec(allocation)) {
      RequireInherited(*fd, "--allocation-from " + allocation);
      // A file behind the descriptor is one the export reads, which nothing may write.
      struct stat st;
      if (::fstat(*fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode))) {
        AddRead(p, allocation, st);
      }
      data = qcow::ReadDataRanges(allocation, options, raw->size());
    } else {
      qcow::ChainOptions o{.search_path = options.search_path,
                           .top_format = std::nullopt,
                           .warn = options.warn,
                           .metadata = true};
      auto chain = std::make_unique<qcow::ImageChain>(qcow::ImageChain::Open(allocation, o));
      AddReads(p, *chain);
      data = qcow::ReadDataRanges(*chain, allocation, raw->size());
      if (chain->layers().front().format != qcow::LayerFormat::kRaw) p.metadata = std::move(chain);
    }
    p.source = qcow::WithAllocation(std::move(raw), std::move(data), allocation);
  }
  if (!a.changed_blocks.empty()) {
    qcow::DeltaPlan plan = PlanChangedBlocks(p, a, bits);
    p.layout = std::make_unique<qcow::ExportLayout>(p.source->size(), bits, std::move(plan.data),
                                                    &plan.delta);
    return p;
  }
  if (!a.relative_to.empty()) {
    if (a.scan_zeros) {
      throw qcow::UsageError(
          "--scan-zeros and --relative-to do not go together: a delta "
          "compares or reads metadata already");
    }
    qcow::DeltaPlan plan = PlanDelta(p, a, options, bits);
    if (!a.backing_name.empty()) plan.delta.backing_file = a.backing_name;
    plan.delta.backing_format =
        BackingFormatArg(a.backing_format, plan.delta.backing_format, plan.delta.backing_file);
    p.layout = std::make_unique<qcow::ExportLayout>(p.source->size(), bits, std::move(plan.data),
                                                    &plan.delta);
    return p;
  }
  if (!a.backing_name.empty()) {
    throw qcow::UsageError("--backing-name needs --relative-to or --changed-blocks");
  }
  if (!a.backing_format.empty()) {
    throw qcow::UsageError("--backing-format needs --relative-to or --changed-blocks");
  }
  qcow::ClusterMap map = p.source->Allocation(bits);
  if (a.scan_zeros) map = DropZeroClusters(*p.source, map, bits, ScanProgress(disk));
  p.layout = std::make_unique<qcow::ExportLayout>(p.source->size(), bits, std::move(map));
  return p;
}

std::string BackingFormatArg(const std::string& given, const std::string& found,
                             const std::string& backing_name) {
  if (!given.empty()) {
    if (given == "raw" || given == "qcow2" || given == "vpc") return given;
    if (given == "vhd") return "vpc";
    throw qcow::UsageError("--backing-format is '" + given +
                           "'; a delta names its backing file as 'raw', 'qcow2' or 'vpc'");
  }
  if (!found.empty()) return found;
  auto ends = [&](const std::string& ext) {
    if (backing_name.size() <= ext.size()) return false;
    const std::string tail = backing_name.substr(backing_name.size() - ext.size());
    return std::equal(tail.begin(), tail.end(), ext.begin(), [](char a, char b) {
      return std::tolower(static_cast<unsigned char>(a)) == b;
    });
  };
  if (ends(".qcow2") || ends(".qcow")) return "qcow2";
  if (ends(".vhd")) return "vpc";
  return "raw";
}

qcow::DataRanges ReadChangedBlocksArg(const std::string& spec, uint64_t disk_size) {
  if (const std::optional<int> fd = qcow::DescriptorSpec(spec)) {
    RequireInherited(*fd, "--changed-blocks " + spec);
  }
  return qcow::ReadChangedBlocks(spec, disk_size);
}

void RefuseWritingOver(const PlannedExport& p, const WrittenFile& written) {
  for (const PlannedExport::File& f : p.reads) RefuseSame(written, f.path, f.st);
}

}  // namespace qcowfs
