// A disk image and its backing chain, opened read-only: each layer a qcow2 image, a VHD
// (fixed, dynamic, or differencing with its parents) or a raw file or block device, and the guest
// view of the top as a list of extents saying which layer defines each byte range and how. The
// extents are read once from the L1 and L2 tables that exist (a VHD's BAT and sector bitmaps,
// SEEK_DATA/SEEK_HOLE of raw layers), so memory and time grow with what the chain allocates, never
// with its virtual size.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qcow/format/image_header.h"
#include "qcow/format/vhd.h"

namespace qcow {

enum class LayerFormat { kRaw, kQcow2, kVhd };

// Returns QEMU's name of the format: "raw", "qcow2" or "vpc".
const char* LayerFormatName(LayerFormat format);

// One file of a chain, open read-only for the chain's lifetime.
struct Layer {
  std::string path;      // the file opened (a backing name resolved)
  std::string named_as;  // the name as the layer above writes it; the top: as given
  LayerFormat format = LayerFormat::kRaw;
  uint64_t virtual_size = 0;  // the guest bytes it describes
  uint64_t file_size = 0;     // reads past it give zeros
  int fd = -1;
  struct stat st {};
  std::optional<ImageInfo> info;   // qcow2 layers
  std::optional<VhdMetadata> vhd;  // VHD layers
};

// What a guest byte range of the chain reads as.
struct ChainExtent {
  enum class Kind : uint8_t {
    kData,         // bytes of layer `depth` at `host`
    kZero,         // zeros that layer `depth` defines (a zero cluster, a raw hole)
    kCompressed,   // part of a compressed cluster of layer `depth`
    kUnallocated,  // no layer defines it: zeros (depth is the lowest layer that covers it)
  };
  uint64_t guest = 0;
  uint64_t length = 0;
  // Data: the host offset of `guest`. Zero: the same when has_host (a preallocated zero
  // cluster, a raw hole). Compressed: the first byte of the compressed cluster.
  uint64_t host = 0;
  uint64_t host_end = 0;  // compressed: the end of its sectors
  uint32_t depth = 0;     // 0 is the top
  Kind kind = Kind::kUnallocated;
  bool has_host = false;
};

struct ChainOptions {
  // Directories searched for a backing file that is not found where its name points.
  std::vector<std::string> search_path;
  // The top's format; when not set, DecideFormat (format_policy.h) decides it: by the file's
  // name, a block device or a file whose name says nothing being raw.
  std::optional<LayerFormat> top_format;
  // Called with each warning (a dirty bit), prefixed with the file's path.
  std::function<void(const std::string&)> warn;
  // Opens the top only (to describe it when its chain cannot be opened).
  bool top_only = false;
  // The caller named the top as metadata (--allocation-from): its bytes decide its format
  // (qcow2 magic, a VHD footer), raw otherwise.
  bool metadata = false;
};

class ImageChain {
 public:
  // Opens the image at path and every backing file below it. Backing names are resolved as
  // QEMU does (relative to the directory of the image that writes them), then in each
  // search path directory; an image on a block device may name only files in its own
  // directory or the search path. A backing file whose format the image does not record is
  // read as DecideFormat decides for a backing file. The parent of a differencing VHD is found
  // through its parent locators the same way, and must carry the unique id the child names. Throws
  // FormatError naming the file and the reason (encryption, an external data file, the corrupt bit,
  // an unknown incompatible feature, a damaged table, a damaged VHD footer or header, a loop in the
  // chain, a backing file that is missing or of an unknown format, a VHD parent whose unique id is
  // not the one expected) and std::system_error when a file cannot be read.
  static ImageChain Open(const std::string& path, const ChainOptions& options);

  ImageChain(ImageChain&&) noexcept;
  ImageChain& operator=(ImageChain&&) noexcept;
  ~ImageChain();

  // Returns the layers, the top first.
  const std::vector<Layer>& layers() const { return layers_; }
  // Returns the guest size: the top's virtual size.
  uint64_t size() const { return layers_.front().virtual_size; }
  // Returns the guest view of the layers above `depth` (all layers by default) as extents
  // covering [0, size()) in order. Ranges that those layers leave to the ones below are
  // kUnallocated, with depth the lowest of them that covers the range; without
  // `unallocated` they are left out (gaps), which saves memory where they read as zeros.
  std::vector<ChainExtent> Extents(uint32_t depth = UINT32_MAX, bool unallocated = true) const;

 private:
  ImageChain() = default;
  std::vector<Layer> layers_;
};

// Returns the extents layer `depth` of `layers` defines, in guest order, clipped to its
// virtual size; ranges it leaves to its backing file are absent, except those inside a
// host cluster (unallocated subclusters of extended L2 entries), which are kUnallocated
// with has_host.
std::vector<ChainExtent> LayerExtents(const std::vector<Layer>& layers, uint32_t depth);

}  // namespace qcow
