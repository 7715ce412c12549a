#include "qcow/sources/open_source.h"

#include "qcow/format/byte_order.h"
#include "qcow/format/format.h"
#include "qcow/sources/chain_source.h"
#include "qcow/sources/raw_source.h"

namespace qcow {

std::unique_ptr<Source> OpenSource(const std::string& path, const SourceOptions& options) {
  ChainOptions chain{
      .search_path = options.search_path, .top_format = LayerFormat::kQcow2, .warn = options.warn};
  if (options.format == SourceFormat::kQcow2) return MakeChainSource(ImageChain::Open(path, chain));
  std::unique_ptr<Source> raw = OpenRawSource(path, options.direct);
  if (options.format == SourceFormat::kAuto && raw->size() >= 4) {
    uint8_t magic[4];
    raw->ReadAt(0, magic, sizeof magic);
    if (LoadBe32(magic) == kQcowMagic) {
      raw.reset();
      return MakeChainSource(ImageChain::Open(path, chain));
    }
  }
  return raw;
}

}  // namespace qcow
