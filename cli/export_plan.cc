#include "cli/export_plan.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "cli/size_arg.h"
#include "qcow/format/errors.h"
#include "qcow/sources/allocation_map.h"
#include "qcow/sources/open_source.h"
#include "qcow/sources/raw_source.h"

namespace qcowfs {
namespace {

uint32_t ClusterBits(const std::string& text) {
  const uint64_t size = ParseSize(text);
  for (uint32_t bits = 9; bits <= 21; ++bits) {
    if (size == (uint64_t{1} << bits)) return bits;
  }
  throw qcow::UsageError("--cluster-size is " + text +
                         "; qcow2 allows a power of two from 512 to 2M");
}

// Prints scan progress on stderr: a live line on a terminal, a line per 10% otherwise.
qcow::ProgressFn ScanProgress(const std::string& source) {
  const bool tty = isatty(STDERR_FILENO);
  auto last = std::make_shared<int>(-1);
  return [=](uint64_t done, uint64_t total) {
    int pct = total ? static_cast<int>(done * 100 / total) : 100;
    if (pct == *last || (!tty && pct % 10 != 0 && pct != 100)) return;
    *last = pct;
    std::fprintf(stderr, "%sscanning %s for zero clusters: %3d%% (%s of %s)%s", tty ? "\r" : "",
                 source.c_str(), pct, HumanSize(done).c_str(), HumanSize(total).c_str(),
                 tty && pct < 100 ? "" : "\n");
  };
}

qcow::SourceOptions SourceOptionsFor(const ExportArgs& a) {
  qcow::SourceOptions o;
  if (a.source_format == "raw") {
    o.format = qcow::SourceFormat::kRaw;
  } else if (a.source_format == "qcow2") {
    o.format = qcow::SourceFormat::kQcow2;
  } else if (!a.source_format.empty() && a.source_format != "hybrid") {
    throw qcow::UsageError("--source-format is '" + a.source_format +
                           "'; qcowfs exports from 'raw', 'qcow2' or 'hybrid' sources");
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

}  // namespace

PlannedExport PlanExport(const std::string& path, const ExportArgs& a) {
  const uint32_t bits = ClusterBits(a.cluster_size);
  PlannedExport p;
  const qcow::SourceOptions options = SourceOptionsFor(a);
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
  } else {
    // The device is the guest view already: read raw, whatever its first bytes are.
    qcow::DataRanges data = qcow::ReadDataRanges(allocation, options);
    p.source =
        qcow::WithAllocation(qcow::OpenRawSource(disk, a.direct), std::move(data), allocation);
  }
  qcow::ClusterMap map = p.source->Allocation(bits);
  if (a.scan_zeros) map = DropZeroClusters(*p.source, map, bits, ScanProgress(disk));
  p.layout = std::make_unique<qcow::ExportLayout>(p.source->size(), bits, std::move(map));
  return p;
}

}  // namespace qcowfs
