#include "qcow/sources/open_source.h"

#include "qcow/sources/chain_source.h"
#include "qcow/sources/raw_source.h"

namespace qcow {

std::unique_ptr<Source> OpenSource(const std::string& path, const SourceOptions& options) {
  ChainOptions chain{
      .search_path = options.search_path, .top_format = std::nullopt, .warn = options.warn};
  switch (options.format) {
    case SourceFormat::kRaw:
      return OpenRawSource(path, options.direct);
    case SourceFormat::kQcow2:
      chain.top_format = LayerFormat::kQcow2;
      return MakeChainSource(ImageChain::Open(path, chain));
    case SourceFormat::kVhd:
      chain.top_format = LayerFormat::kVhd;
      return MakeChainSource(ImageChain::Open(path, chain));
    case SourceFormat::kAuto:
      break;
  }
  ImageChain image = ImageChain::Open(path, chain);
  if (image.layers().front().format != LayerFormat::kRaw) return MakeChainSource(std::move(image));
  return OpenRawSource(path, options.direct);
}

}  // namespace qcow
