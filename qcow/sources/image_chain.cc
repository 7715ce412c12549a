#include "qcow/sources/image_chain.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <string_view>
#include <system_error>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/io/disk_lock.h"
#include "qcow/sources/format_policy.h"
#include "qcow/sources/layer_reader.h"
#include "qcow/sources/paths.h"
#include "qcow/sources/vhd_layer.h"

namespace qcow {
namespace {

// A chain deeper than this is surely a mistake (QEMU has no fixed limit; loops are caught
// apart from it).
constexpr size_t kMaxDepth = 1024;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Where QEMU looks for `name` written in the image at `parent`, then the search path. With
// `confined`, only places in the parent's directory or the search path count.
std::string ResolveBackingName(const std::string& name, const std::string& parent,
                               const std::vector<std::string>& search_path, bool confined) {
  const auto usable = [&](const std::string& candidate) {
    return (!confined || AllowedFromBlockDevice(candidate, parent, search_path)) &&
           Exists(candidate);
  };
  const std::string direct = name.front() == '/' ? name : DirName(parent) + "/" + name;
  if (usable(direct)) return direct;
  for (const auto& dir : search_path) {
    for (const std::string& candidate : {dir + "/" + name, dir + "/" + BaseName(name)}) {
      if (usable(candidate)) return candidate;
    }
  }
  return direct;
}

// Whether e says the process, not the file, is at fault (descriptors or memory run out).
bool OutOfResources(const std::system_error& e) {
  const int err = e.code().value();
  return err == EMFILE || err == ENFILE || err == ENOMEM;
}

// The end of a refusal of a file whose name said it was an image of `format`.
std::string NameHint(LayerFormat format) {
  return std::string(" (its name says it is ") + (format == LayerFormat::kVhd ? "a VHD" : "qcow2") +
         "; give --source-format raw to export its bytes as they are)";
}

// Opens `path` read-only as a layer; the format is decided by DecideFormat for `role` when
// not given.
// `context` starts a refusal of the format (what names the file).
Layer OpenLayer(const std::string& path, const std::string& named_as,
                std::optional<LayerFormat> format, const ChainOptions& options, FormatRole role,
                const std::string& context = "") {
  Layer layer;
  layer.path = path;
  layer.named_as = named_as;
  layer.fd = OpenDisk(path, 0, &layer.st, &layer.file_size);
  try {
    std::vector<uint8_t> head(512);
    head.resize(PreadUpTo(layer.fd, path, 0, head.data(), head.size()));
    const bool decided = !format;
    if (!format) {
      try {
        format = DecideFormat(path, layer.st, head, TailOf(layer.fd, path, layer.file_size), role,
                              options.warn);
      } catch (const FormatError& e) {
        throw FormatError(context + e.what());
      }
    }
    layer.format = *format;
    if (layer.format == LayerFormat::kRaw) {
      layer.virtual_size = layer.file_size;
      return layer;
    }
    if (layer.format == LayerFormat::kVhd) {
      // A footer at the end, or its copy at the start (a VHD in a larger logical volume).
      layer.vhd = ReadVhdMetadata(layer.fd, path, layer.file_size, head, S_ISBLK(layer.st.st_mode));
      if (!layer.vhd) {
        Refuse(path + " is not a VHD: neither its last sector nor its first is a VHD footer" +
               (decided ? NameHint(layer.format) : std::string()));
      }
      layer.virtual_size = layer.vhd->guest_size;
      return layer;
    }
    if (head.size() < 4 || LoadBe32(head.data()) != kQcowMagic) {
      Refuse(path + " is not a qcow2 image: it does not start with the qcow2 magic" +
             (decided ? NameHint(layer.format) : std::string()));
    }
    const uint64_t need = HeaderBytesNeeded(head);
    head.resize(need);
    head.resize(PreadUpTo(layer.fd, path, 0, head.data(), need));
    try {
      layer.info = ParseImageHeader(head, [&](const std::string& w) {
        if (options.warn) options.warn(path + ": " + w);
      });
    } catch (const FormatError& e) {
      throw FormatError(path + ": " + e.what());
    }
    layer.virtual_size = layer.info->virtual_size;
    return layer;
  } catch (...) {
    ::close(layer.fd);
    throw;
  }
}

// Whether the files an image names must be block devices beside it or in the search path:
// an image on a block device is there by the caller's word (a block device's format is
// never guessed), and LVM SRs keep every layer of a chain as a volume of one volume group
// (or where --path points). A guest's raw volume read as an image by mistake then reaches
// no host file.
bool Confined(const Layer& layer) { return S_ISBLK(layer.st.st_mode); }

// The end of a refusal of a backing file or parent an image on a block device may not name.
std::string OutsideReason(const Layer& layer) {
  return " is not a block device in " + DirName(layer.path) +
         " or a --path directory, where the files named by an image on a block device must "
         "be";
}

// Opens the parent of the differencing VHD `child`: the first place its locators or the
// search path name that holds a VHD with the unique id the child names.
Layer OpenVhdParent(const Layer& child, const ChainOptions& options) {
  const std::vector<VhdParentCandidate> candidates =
      VhdParentCandidates(child, options.search_path);
  const auto& want = child.vhd->header.parent_unique_id;
  std::string mismatch, unreadable, looked, outside;
  for (const VhdParentCandidate& c : candidates) {
    if (looked.size() < 400) looked += (looked.empty() ? "" : ", ") + c.path;
    if (!Exists(c.path)) continue;
    if (Confined(child) && !AllowedFromBlockDevice(c.path, child.path, options.search_path)) {
      outside = c.path;
      continue;
    }
    Layer parent;
    try {
      parent = OpenLayer(c.path, c.named_as, LayerFormat::kVhd, options, FormatRole::kBacking);
    } catch (const DiskInUse&) {
      throw;  // the parent is there but being written: not a reason to look further
    } catch (const std::system_error& e) {
      if (OutOfResources(e)) throw;
      unreadable = c.path + ": " + std::strerror(e.code().value());
      continue;
    } catch (const std::exception& e) {  // not a VHD, or a damaged one
      unreadable = e.what();
      continue;
    }
    if (parent.vhd->footer.unique_id == want) return parent;
    mismatch = c.path + " has unique id " + UuidText(parent.vhd->footer.unique_id);
    ::close(parent.fd);
  }
  const std::string expected = "parent " + UuidText(want) +
                               (child.vhd->header.parent_unicode_name.empty()
                                    ? std::string()
                                    : " ('" + child.vhd->header.parent_unicode_name + "')");
  if (!mismatch.empty()) {
    Refuse(child.path + ": its " + expected + " is not found: " + mismatch +
           " (not the parent, or the chain was changed)");
  }
  if (!unreadable.empty()) {
    Refuse(child.path + ": its " + expected + " cannot be read: " + unreadable);
  }
  if (!outside.empty())
    Refuse(child.path + ": its " + expected + " at " + outside + OutsideReason(child));
  Refuse(child.path + ": its " + expected + " is not found (looked at " +
         (looked.empty() ? std::string("nothing: no parent locator names a file") : looked) +
         "); name its directory with --path");
}

std::optional<LayerFormat> BackingFormat(const Layer& layer) {
  const std::string& f = layer.info->backing_format;
  if (f.empty()) return std::nullopt;
  if (f == "raw") return LayerFormat::kRaw;
  if (f == "qcow2") return LayerFormat::kQcow2;
  if (f == "vpc") return LayerFormat::kVhd;
  Refuse(layer.path + ": its backing file '" + layer.info->backing_file + "' has format '" + f +
         "'; qcowfs reads raw, qcow2 and vpc (VHD) backing files");
}

// Appends to `out` the parts of `fill` that lie in the gaps between the extents of `base`
// below `limit`, keeping guest order; both inputs are sorted and non-overlapping.
std::vector<ChainExtent> FillGaps(const std::vector<ChainExtent>& base,
                                  const std::vector<ChainExtent>& fill, uint64_t limit) {
  std::vector<ChainExtent> out;
  out.reserve(base.size() + fill.size());
  size_t f = 0;
  auto fill_gap = [&](uint64_t lo, uint64_t hi) {
    hi = std::min(hi, limit);
    while (f < fill.size() && fill[f].guest + fill[f].length <= lo) ++f;
    for (size_t i = f; i < fill.size() && fill[i].guest < hi; ++i) {
      ChainExtent e = fill[i];
      if (e.kind == ChainExtent::Kind::kUnallocated && e.has_host) continue;  // not defined
      const uint64_t a = std::max(lo, e.guest), b = std::min(hi, e.guest + e.length);
      if (e.kind != ChainExtent::Kind::kCompressed && e.has_host) e.host += a - e.guest;
      e.guest = a;
      e.length = b - a;
      out.push_back(e);
    }
  };
  uint64_t pos = 0;
  for (const ChainExtent& e : base) {
    if (e.guest > pos) fill_gap(pos, e.guest);
    out.push_back(e);
    pos = e.guest + e.length;
  }
  if (pos < limit) fill_gap(pos, limit);
  return out;
}

}  // namespace

const char* LayerFormatName(LayerFormat format) {
  switch (format) {
    case LayerFormat::kQcow2:
      return "qcow2";
    case LayerFormat::kVhd:
      return "vpc";
    default:
      return "raw";
  }
}

ImageChain ImageChain::Open(const std::string& path, const ChainOptions& options) {
  ImageChain chain;
  chain.layers_.push_back(OpenLayer(path, path, options.top_format, options,
                                    options.metadata ? FormatRole::kMetadata : FormatRole::kTop));
  while (!options.top_only) {
    const Layer& layer = chain.layers_.back();
    if (layer.format == LayerFormat::kVhd && layer.vhd->footer.disk_type == kVhdDifferencing) {
      if (chain.layers_.size() >= kMaxDepth) {
        Refuse(path + ": the VHD chain is deeper than " + std::to_string(kMaxDepth) + " layers");
      }
      Layer next = OpenVhdParent(layer, options);
      for (const Layer& above : chain.layers_) {
        if (above.st.st_dev == next.st.st_dev && above.st.st_ino == next.st.st_ino) {
          ::close(next.fd);
          Refuse(layer.path + ": the VHD chain loops: its parent is " + above.path +
                 ", already in the chain");
        }
      }
      chain.layers_.push_back(std::move(next));
      continue;
    }
    if (layer.format != LayerFormat::kQcow2 || layer.info->backing_file.empty()) break;
    const std::string& name = layer.info->backing_file;
    if (name.find(':') != std::string::npos && name.front() != '/' && name.front() != '.') {
      // "json:{...}", "nbd://..." and other protocols QEMU would open are not files.
      const auto colon = name.find(':');
      if (name.compare(0, 5, "json:") == 0 || name.compare(colon, 3, "://") == 0) {
        Refuse(layer.path + ": its backing file '" + name +
               "' is not a file name; qcowfs reads backing files by path");
      }
    }
    if (chain.layers_.size() >= kMaxDepth) {
      Refuse(path + ": the backing chain is deeper than " + std::to_string(kMaxDepth) + " layers");
    }
    const std::string resolved =
        ResolveBackingName(name, layer.path, options.search_path, Confined(layer));
    if (Confined(layer) && !AllowedFromBlockDevice(resolved, layer.path, options.search_path)) {
      Refuse(layer.path + ": its backing file '" + name + "' (" + resolved + ")" +
             OutsideReason(layer));
    }
    const std::optional<LayerFormat> format = BackingFormat(layer);
    Layer next;
    try {
      next = OpenLayer(resolved, name, format, options, FormatRole::kBacking,
                       layer.path + ": its backing file '" + name + "': ");
    } catch (const std::system_error& e) {
      if (OutOfResources(e)) throw;
      throw FormatError(layer.path + ": its backing file '" + name + "' cannot be opened (" +
                        resolved + ": " + std::strerror(e.code().value()) + ")");
    } catch (const UsageError& e) {
      // Not a file or device, or of another format: the image is at fault.
      throw FormatError(layer.path + ": its backing file '" + name + "' (" + resolved + ") " +
                        (std::string(e.what()).rfind(resolved, 0) == 0
                             ? std::string(e.what()).substr(resolved.size() + 1)
                             : std::string(e.what())) +
                        "; qcowfs reads raw, qcow2 and vpc (VHD) backing files");
    }
    for (const Layer& above : chain.layers_) {
      if (above.st.st_dev == next.st.st_dev && above.st.st_ino == next.st.st_ino) {
        ::close(next.fd);
        Refuse(layer.path + ": the backing chain loops: its backing file '" + name + "' is " +
               above.path + ", already in the chain");
      }
    }
    chain.layers_.push_back(std::move(next));
  }
  return chain;
}

ImageChain::ImageChain(ImageChain&& o) noexcept : layers_(std::move(o.layers_)) {
  o.layers_.clear();
}

ImageChain& ImageChain::operator=(ImageChain&& o) noexcept {
  std::swap(layers_, o.layers_);
  return *this;
}

ImageChain::~ImageChain() {
  for (const Layer& l : layers_) ::close(l.fd);
}

std::vector<ChainExtent> ImageChain::Extents(uint32_t depth, bool unallocated) const {
  const uint32_t n = static_cast<uint32_t>(std::min<size_t>(depth, layers_.size()));
  std::vector<ChainExtent> out;
  uint64_t limit = size();
  for (uint32_t d = 0; d < n; ++d) {
    std::vector<ChainExtent> layer = LayerExtents(layers_, d);
    if (d == 0) {
      // The top, clipped to its own size already: taken as it is (no copy), but for what
      // it says about the unallocated subclusters of its clusters.
      std::erase_if(layer, [](const ChainExtent& e) {
        return e.kind == ChainExtent::Kind::kUnallocated && e.has_host;
      });
      out = std::move(layer);
    } else {
      out = FillGaps(out, layer, limit);
    }
    // What this layer leaves to its backing file reads as zeros past the backing file's
    // end, and past the last layer asked for.
    const uint64_t next_limit =
        d + 1 < layers_.size() && d + 1 < n ? std::min(limit, layers_[d + 1].virtual_size) : 0;
    if (next_limit < limit && unallocated) {
      ChainExtent rest;
      rest.guest = next_limit;
      rest.length = limit - next_limit;
      rest.depth = d;
      out = FillGaps(out, {rest}, limit);
    }
    limit = next_limit;
  }
  out.shrink_to_fit();
  return out;
}

}  // namespace qcow
