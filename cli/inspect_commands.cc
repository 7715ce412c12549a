#include "cli/inspect_commands.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "cli/exit_codes.h"
#include "cli/export_plan.h"
#include "cli/size_arg.h"
#include "cli/stop_signals.h"
#include "qcow/export/cluster_map.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/import/image_check.h"
#include "qcow/sources/chain_source.h"
#include "qcow/sources/format_policy.h"
#include "qcow/sources/image_chain.h"
#include "qcow/sources/qemu_map.h"
#include "qcow/sources/vhd_layer.h"

namespace qcowfs {
namespace {

// Returns the length of the valid UTF-8 sequence at s[i], or 0 when there is none.
size_t Utf8Length(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  return n;
}

// Returns s as a JSON string; bytes that are not UTF-8 (a file name may hold any) become
// U+FFFD.
std::string Json(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t n = Utf8Length(s, i);
      out += n ? s.substr(i, n) : "\\ufffd";
      i += n ? n - 1 : 0;
      continue;
    }
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

// `info` of a VHD: its footer and header, its chain of parents, what it allocates.
int RunVhdInfo(const std::string& path, const std::vector<std::string>& search_path, bool json) {
  std::vector<std::string> warnings;
  std::optional<qcow::ImageChain> chain;
  qcow::ChainOptions o;
  o.search_path = search_path;
  o.top_format = qcow::LayerFormat::kVhd;
  try {
    chain = qcow::ImageChain::Open(path, o);
  } catch (const qcow::FormatError& e) {
    o.top_only = true;
    chain = qcow::ImageChain::Open(path, o);  // the top alone, or its own error
    warnings.push_back(std::string("parent chain: ") + e.what());
  }
  const qcow::Layer& top = chain->layers().front();
  const qcow::VhdMetadata& m = *top.vhd;
  const bool differencing = m.footer.disk_type == qcow::kVhdDifferencing;
  uint64_t allocated = 0;
  for (const qcow::ChainExtent& e : qcow::LayerExtents(chain->layers(), 0)) {
    if (e.kind == qcow::ChainExtent::Kind::kData) allocated += e.length;
  }
  const std::string type = qcow::VhdDiskTypeName(m.footer.disk_type);
  const std::string creator = m.footer.creator_application.substr(
      0, m.footer.creator_application.find_last_not_of(std::string(" \0", 2)) + 1);
  std::string chain_json = "[", chain_text;
  for (size_t i = 1; i < chain->layers().size(); ++i) {
    const qcow::Layer& l = chain->layers()[i];
    const std::string t = qcow::VhdDiskTypeName(l.vhd->footer.disk_type);
    chain_json += std::string(i > 1 ? ", " : "") + "{\"backing-filename\": " + Json(l.named_as) +
                  ", \"filename\": " + Json(l.path) + ", \"format\": \"vpc\", \"disk-type\": \"" +
                  t + "\", \"virtual-size\": " + std::to_string(l.virtual_size) +
                  ", \"unique-id\": \"" + qcow::UuidText(l.vhd->footer.unique_id) + "\"}";
    chain_text += "  " + std::to_string(i) + ": " + l.path + " (vpc " + t + ", " +
                  std::to_string(l.virtual_size) + " bytes)\n";
  }
  chain_json += "]";
  const std::string parent_id = qcow::UuidText(m.header.parent_unique_id);
  const std::string problem = "a VHD: qcowfs exports VHDs and imports qcow2 images";
  std::ostringstream out;
  if (json) {
    out << "{\n"
        << "    \"filename\": " << Json(path) << ",\n"
        << "    \"format\": \"vpc\",\n"
        << "    \"disk-type\": \"" << type << "\",\n"
        << "    \"virtual-size\": " << top.virtual_size << ",\n"
        << "    \"current-size\": " << m.footer.current_size << ",\n"
        << "    \"block-size\": "
        << (m.footer.disk_type == qcow::kVhdFixed ? 0 : m.header.block_size) << ",\n"
        << "    \"file-size\": " << top.file_size << ",\n"
        << "    \"allocated-bytes\": " << allocated << ",\n"
        << "    \"creator\": " << Json(creator) << ",\n"
        << "    \"unique-id\": \"" << qcow::UuidText(m.footer.unique_id) << "\",\n"
        << "    \"parent-unique-id\": " << (differencing ? "\"" + parent_id + "\"" : "null")
        << ",\n"
        << "    \"parent-name\": "
        << (differencing ? Json(m.header.parent_unicode_name) : std::string("null")) << ",\n"
        << "    \"backing-chain\": " << chain_json << ",\n"
        << "    \"warnings\": " << JsonList(warnings) << ",\n"
        << "    \"problems\": " << JsonList({problem}) << ",\n"
        << "    \"importable\": false\n"
        << "}\n";
  } else {
    out << "image: " << path << "\n"
        << "format: vpc (VHD) " << type << "\n"
        << "virtual size: " << HumanSize(top.virtual_size) << " (" << top.virtual_size
        << " bytes)\n";
    if (m.footer.disk_type != qcow::kVhdFixed) out << "block size: " << m.header.block_size << "\n";
    out << "file size: " << top.file_size << "\n"
        << "allocated bytes: " << allocated << "\n"
        << "creator: " << creator << "\n"
        << "unique id: " << qcow::UuidText(m.footer.unique_id) << "\n";
    if (differencing) {
      out << "parent: " << m.header.parent_unicode_name << " (" << parent_id << ")\n";
    }
    if (!chain_text.empty()) out << "parent chain:\n" << chain_text;
    for (const auto& w : warnings) out << "warning: " << w << "\n";
    out << "problems: " << problem << "\n";
  }
  std::fputs(out.str().c_str(), stdout);
  return kExitOk;
}

}  // namespace

int RunInfo(const std::string& path, const std::string& search_path,
            const std::string& source_format, bool json) {
  ExportArgs a;
  a.search_path = search_path;
  a.source_format = source_format;
  if (source_format == "hybrid") {
    throw qcow::UsageError("--source-format of info is raw, qcow2 or vhd; hybrid is for stream");
  }
  const qcow::SourceOptions options = SourceOptionsFor(a);
  // The format is decided before anything the file says is believed: a guest's raw disk
  // may start with any header, naming any backing file.
  qcow::LayerFormat format = qcow::LayerFormat::kRaw;
  switch (options.format) {
    case qcow::SourceFormat::kRaw:
      break;
    case qcow::SourceFormat::kQcow2:
      format = qcow::LayerFormat::kQcow2;
      break;
    case qcow::SourceFormat::kVhd:
      format = qcow::LayerFormat::kVhd;
      break;
    case qcow::SourceFormat::kAuto:
      // No warning: the error below says the same of a block device read as raw.
      format = qcow::DecideFormatOf(path, qcow::FormatRole::kTop, nullptr);
      break;
  }
  if (format == qcow::LayerFormat::kVhd) return RunVhdInfo(path, options.search_path, json);
  qcow::ImageReport r = qcow::InspectImage(path);
  if (format == qcow::LayerFormat::kRaw || !r.header) {
    std::string why = r.problem;
    if (format == qcow::LayerFormat::kRaw && r.header) {
      why = std::string("read as a raw disk: ") + (options.format == qcow::SourceFormat::kRaw
                                                       ? "--source-format raw says so"
                                                       : "its format is not taken from its "
                                                         "bytes (give --source-format qcow2 "
                                                         "or vhd if it holds an image)");
    }
    PrintFinalError(path + ": " + why, kExitFormat);
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
  // The backing chain, each layer as opened; a chain that cannot be opened is a warning.
  std::vector<qcow::Layer> chain;
  std::optional<qcow::ImageChain> opened;
  if (!r.backing_file.empty()) {
    try {
      qcow::ChainOptions o;
      o.search_path = options.search_path;
      o.top_format = qcow::LayerFormat::kQcow2;
      opened = qcow::ImageChain::Open(path, o);
    } catch (const std::exception& e) {
      r.warnings.push_back(std::string("backing chain: ") + e.what());
    }
  }
  std::string chain_json = "[", chain_text;
  if (opened) {
    for (size_t i = 1; i < opened->layers().size(); ++i) {
      const qcow::Layer& l = opened->layers()[i];
      const char* format = qcow::LayerFormatName(l.format);
      chain_json += std::string(i > 1 ? ", " : "") + "{\"backing-filename\": " + Json(l.named_as) +
                    ", \"filename\": " + Json(l.path) + ", \"format\": \"" + format +
                    "\", \"virtual-size\": " + std::to_string(l.virtual_size) + "}";
      chain_text += "  " + std::to_string(i) + ": " + l.path + " (" + format + ", " +
                    std::to_string(l.virtual_size) + " bytes)\n";
    }
  }
  chain_json += "]";
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
      << "    \"backing-chain\": " << chain_json << ",\n"
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
    if (!chain_text.empty()) o << "backing chain:\n" << chain_text;
    for (const auto& w : r.warnings) o << "warning: " << w << "\n";
    o << "problems: " << (problems.empty() ? "none" : problems[0]) << "\n";
  }
  std::fputs(o.str().c_str(), stdout);
  return kExitOk;
}

int RunReadHeaders(const std::string& path, const std::string& search_path) {
  // xapi names the qcow2 file tapdisk opens for a VDI: on a file SR a file named .qcow2, on
  // an LVM SR a volume (whose backing files must then lie beside it or in --path). Any other
  // file may be a guest's raw disk, whose first bytes may hold any header.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISBLK(st.st_mode) &&
      qcow::FormatOfName(path) != qcow::LayerFormat::kQcow2) {
    qcow::Refuse(path +
                 " is not named as a qcow2 image (.qcow2): read_headers reads the qcow2 file of "
                 "a VDI, or its volume on an LVM SR");
  }
  ExportArgs a;
  a.search_path = search_path;
  qcow::ChainOptions o;
  o.search_path = SourceOptionsFor(a).search_path;
  o.top_format = qcow::LayerFormat::kQcow2;
  o.warn = [](const std::string& w) { std::fprintf(stderr, "qcowfs: warning: %s\n", w.c_str()); };
  const qcow::ImageChain chain = qcow::ImageChain::Open(path, o);
  const uint32_t bits = chain.layers().front().info->header.cluster_bits;
  qcow::ClusterMap::Builder b;
  for (const qcow::ChainExtent& e : chain.Extents(UINT32_MAX, false)) {
    if (e.kind == qcow::ChainExtent::Kind::kData ||
        e.kind == qcow::ChainExtent::Kind::kCompressed) {
      b.AddBytes(e.guest, e.length, bits);
    }
  }
  const qcow::ClusterMap clusters = b.Build();
  // Written as it goes: a large disk has millions of clusters.
  std::printf("{\"virtual_size\": %llu, \"cluster_bits\": %u, \"data_clusters\": [",
              static_cast<unsigned long long>(chain.size()), bits);
  bool first = true;
  for (const auto& run : clusters.runs()) {
    for (uint64_t c = run.first; c < run.first + run.count; ++c) {
      std::printf(first ? "%llu" : ",%llu", static_cast<unsigned long long>(c));
      first = false;
    }
  }
  std::printf("]}\n");
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    throw std::system_error(errno, std::generic_category(), "writing to stdout");
  }
  return kExitOk;
}

int RunCheck(const std::string& path, bool delta) {
  const qcow::ImageReport r = qcow::CheckImage(path, delta);
  for (const auto& w : r.warnings) std::fprintf(stderr, "qcowfs: warning: %s\n", w.c_str());
  if (!r.problem.empty()) {
    PrintFinalError(path + ": " + r.problem, kExitFormat);
    return kExitFormat;
  }
  std::printf("%s: would import: virtual size %llu bytes, %llu bytes of data\n", path.c_str(),
              static_cast<unsigned long long>(r.info->virtual_size),
              static_cast<unsigned long long>(r.data_bytes));
  return kExitOk;
}

int RunMap(const std::string& source, const ExportArgs& args, bool json) {
  PlannedExport plan = PlanExport(source, args);
  // What qemu-img map prints: for a qcow2 source without a delta, of the source itself
  // (its chain); otherwise of the exported image, over the delta's base chain if any.
  std::vector<std::unique_ptr<qcow::MapLayer>> layers;
  std::optional<qcow::ImageChain> raw_base;
  const qcow::ImageChain* chain = qcow::ChainOf(*plan.source);
  if (chain && args.relative_to.empty()) {
    layers = qcow::ChainMapLayers(*chain);
  } else {
    layers.push_back(qcow::ExportMapLayer(*plan.layout));
    if (!args.relative_to.empty()) {
      const qcow::ImageChain* base = plan.base_chain;
      if (!base) {  // a raw disk compared with: one raw layer
        qcow::ChainOptions o;
        o.top_format = qcow::LayerFormat::kRaw;
        base = &raw_base.emplace(qcow::ImageChain::Open(args.relative_to, o));
      }
      for (auto& l : qcow::ChainMapLayers(*base, plan.base_depth)) layers.push_back(std::move(l));
    }
  }
  std::vector<const qcow::MapLayer*> view;
  for (const auto& l : layers) view.push_back(l.get());
  const std::vector<qcow::MapEntry> entries = qcow::QemuMap(view);
  if (json) {
    std::fputs(qcow::QemuMapJson(entries).c_str(), stdout);
    return kExitOk;
  }
  for (const qcow::MapEntry& e : entries) {
    std::string what = !e.present ? "unallocated (reads zeros)"
                       : e.data   ? (e.zero ? "data, a hole in its file (reads zeros)" : "data")
                                  : "zero";
    if (e.has_offset) what += " at offset " + std::to_string(e.offset);
    std::printf("%-20llu %-20llu depth %-3u %s\n", static_cast<unsigned long long>(e.start),
                static_cast<unsigned long long>(e.length), e.depth, what.c_str());
  }
  return kExitOk;
}

}  // namespace qcowfs
