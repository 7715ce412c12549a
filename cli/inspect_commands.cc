#include "cli/inspect_commands.h"

#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/size_arg.h"
#include "qcow/format/format.h"
#include "qcow/import/image_check.h"

namespace qcowfs {
namespace {

std::string Json(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// Names of the set bits of a feature field (type 0 incompatible, 1 compatible, 2 autoclear).
std::vector<std::string> FeatureNames(uint64_t bits, uint8_t type) {
  std::vector<std::string> out;
  for (unsigned b = 0; b < 64; ++b) {
    if (!(bits >> b & 1)) continue;
    std::string name = "bit " + std::to_string(b);
    for (const auto& f : qcow::KnownFeatureNames()) {
      if (f.type == type && f.bit == b) name = f.name;
    }
    out.push_back(name);
  }
  return out;
}

std::string JsonList(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + Json(v[i]);
  return out + "]";
}

std::string TextList(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out.empty() ? "none" : out;
}

}  // namespace

int RunInfo(const std::string& path, bool json) {
  const qcow::ImageReport r = qcow::InspectImage(path);
  if (!r.header) {
    std::fprintf(stderr, "qcowfs: error: %s: %s\n", path.c_str(), r.problem.c_str());
    return kExitFormat;
  }
  const qcow::QcowHeader& h = *r.header;
  const uint64_t cluster = h.cluster_bits < 64 ? uint64_t{1} << h.cluster_bits : 0;
  std::vector<std::string> problems;
  if (!r.problem.empty()) problems.push_back(r.problem);
  const auto incompatible = FeatureNames(h.incompatible_features, 0);
  const auto compatible = FeatureNames(h.compatible_features, 1);
  const auto autoclear = FeatureNames(h.autoclear_features, 2);
  const uint32_t refcount_bits = 1u << (h.refcount_order < 31 ? h.refcount_order : 0);
  const char* compression = h.compression_type == qcow::kCompressionZstd ? "zstd" : "zlib";
  std::ostringstream o;
  if (json) {
    o << "{\n"
      << "    \"filename\": " << Json(path) << ",\n"
      << "    \"format\": \"qcow2\",\n"
      << "    \"version\": " << h.version << ",\n"
      << "    \"virtual-size\": " << h.size << ",\n"
      << "    \"cluster-size\": " << cluster << ",\n"
      << "    \"file-size\": " << r.file_size << ",\n"
      << "    \"allocated-bytes\": " << r.data_bytes << ",\n"
      << "    \"refcount-bits\": " << refcount_bits << ",\n"
      << "    \"compression-type\": \"" << compression << "\",\n"
      << "    \"l1-size\": " << h.l1_size << ",\n"
      << "    \"snapshots\": " << h.nb_snapshots << ",\n"
      << "    \"incompatible-features\": " << JsonList(incompatible) << ",\n"
      << "    \"compatible-features\": " << JsonList(compatible) << ",\n"
      << "    \"autoclear-features\": " << JsonList(autoclear) << ",\n"
      << "    \"backing-file\": " << (r.backing_file.empty() ? "null" : Json(r.backing_file))
      << ",\n"
      << "    \"warnings\": " << JsonList(r.warnings) << ",\n"
      << "    \"problems\": " << JsonList(problems) << ",\n"
      << "    \"importable\": " << (problems.empty() ? "true" : "false") << "\n"
      << "}\n";
  } else {
    o << "image: " << path << "\n"
      << "format: qcow2 version " << h.version << "\n"
      << "virtual size: " << HumanSize(h.size) << " (" << h.size << " bytes)\n"
      << "cluster size: " << cluster << "\n"
      << "file size: " << r.file_size << "\n"
      << "allocated bytes: " << r.data_bytes << "\n"
      << "refcount bits: " << refcount_bits << "\n"
      << "compression type: " << compression << "\n"
      << "snapshots: " << h.nb_snapshots << "\n"
      << "incompatible features: " << TextList(incompatible) << "\n"
      << "compatible features: " << TextList(compatible) << "\n"
      << "autoclear features: " << TextList(autoclear) << "\n"
      << "backing file: " << (r.backing_file.empty() ? "none" : r.backing_file) << "\n";
    for (const auto& w : r.warnings) o << "warning: " << w << "\n";
    o << "problems: " << (problems.empty() ? "none" : problems[0]) << "\n";
  }
  std::fputs(o.str().c_str(), stdout);
  return kExitOk;
}

int RunCheck(const std::string& path) {
  const qcow::ImageReport r = qcow::CheckImage(path);
  for (const auto& w : r.warnings) std::fprintf(stderr, "qcowfs: warning: %s\n", w.c_str());
  if (!r.problem.empty()) {
    std::fprintf(stderr, "qcowfs: error: %s: %s\n", path.c_str(), r.problem.c_str());
    return kExitFormat;
  }
  std::printf("%s: would import: virtual size %llu bytes, %llu bytes of data\n", path.c_str(),
              static_cast<unsigned long long>(r.info->virtual_size),
              static_cast<unsigned long long>(r.data_bytes));
  return kExitOk;
}

int RunMap(const std::string& source, const ExportArgs& args, bool json) {
  PlannedExport plan = PlanExport(source, args);
  const qcow::ExportLayout& l = *plan.layout;
  const uint64_t c = l.cluster_size(), v = l.virtual_size();
  struct Extent {
    uint64_t start, length;
    bool data;
    uint64_t offset;
  };
  std::vector<Extent> extents;
  uint64_t pos = 0;
  for (const auto& run : l.data_clusters().runs()) {
    const uint64_t start = run.first * c;
    if (start > pos) extents.push_back({pos, start - pos, false, 0});
    const uint64_t end = std::min(v, (run.first + run.count) * c);
    extents.push_back({start, end - start, true, l.data_offset() + run.rank * c});
    pos = end;
  }
  if (pos < v) extents.push_back({pos, v - pos, false, 0});
  if (json) std::printf("[");
  for (size_t i = 0; i < extents.size(); ++i) {
    const Extent& e = extents[i];
    if (json) {
      std::printf(
          "%s{ \"start\": %llu, \"length\": %llu, \"depth\": 0, \"present\": %s, "
          "\"zero\": %s, \"data\": %s",
          i ? ",\n" : "", static_cast<unsigned long long>(e.start),
          static_cast<unsigned long long>(e.length), e.data ? "true" : "false",
          e.data ? "false" : "true", e.data ? "true" : "false");
      if (e.data) std::printf(", \"offset\": %llu", static_cast<unsigned long long>(e.offset));
      std::printf("}");
    } else {
      std::printf("%-20llu %-20llu %s\n", static_cast<unsigned long long>(e.start),
                  static_cast<unsigned long long>(e.length),
                  e.data ? ("data at image offset " + std::to_string(e.offset)).c_str()
                         : "zero (not exported)");
    }
  }
  if (json) std::printf("]\n");
  return kExitOk;
}

}  // namespace qcowfs
