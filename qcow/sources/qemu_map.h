// What `qemu-img map --output=json` (QEMU 7.2) prints for a chain of images, computed from
// the layers' metadata and their files' SEEK_DATA/SEEK_HOLE, so that `qcowfs map` of a qcow2
// source, or of an export, prints the same bytes. The rules (block status of each layer,
// the walk down the chain, merging, and QEMU's "metadata preallocation" heuristic that
// looks at an image file's holes) are from QEMU's qemu-img.c, block/io.c and block/qcow2.c.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qcow/export/export_layout.h"
#include "qcow/sources/image_chain.h"

namespace qcow {

// One layer as qemu-img's block status sees it.
class MapLayer {
 public:
  struct Answer {
    bool data = false, zero = false, has_offset = false;
    uint64_t offset = 0;
    uint64_t length = 0;  // how far the answer holds, at most what was asked
  };
  virtual ~MapLayer() = default;
  // Returns the layer's length in bytes.
  virtual uint64_t length() const = 0;
  // Returns the layer's own status at `offset` (< length()) for up to n (> 0) bytes.
  virtual Answer Status(uint64_t offset, uint64_t n) const = 0;
};

struct MapEntry {
  uint64_t start = 0, length = 0;
  uint32_t depth = 0;
  bool present = false, zero = false, data = false, has_offset = false;
  uint64_t offset = 0;
};

// Returns the map layers of the chain's layers from `depth` down (layers of `chain` must
// outlive them). Throws std::system_error when a file cannot be read.
std::vector<std::unique_ptr<MapLayer>> ChainMapLayers(const ImageChain& chain, uint32_t depth = 0);

// Returns the map layer of an exported image (its data clusters at their file offsets, its
// zero clusters); `layout` must outlive it.
std::unique_ptr<MapLayer> ExportMapLayer(const ExportLayout& layout);

// Returns the merged entries of the chain `layers` (top first), as qemu-img map does.
std::vector<MapEntry> QemuMap(const std::vector<const MapLayer*>& layers);

// Returns the entries as qemu-img map --output=json prints them (with the trailing newline).
std::string QemuMapJson(const std::vector<MapEntry>& entries);

}  // namespace qcow
