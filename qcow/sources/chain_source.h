// A qcow2 image with its backing chain as an export source: the guest view of its top.
#pragma once

#include <memory>

#include "qcow/export/source.h"
#include "qcow/sources/image_chain.h"

namespace qcow {

// Returns a source over `chain`. Data clusters are named as pieces of the layers' files
// (spliced, no copy); compressed clusters are decompressed into the reader's buffer; the
// last cluster decompressed is kept per thread, for readers that take it in several
// requests.
std::unique_ptr<Source> MakeChainSource(ImageChain chain);

// Returns the chain a source made by MakeChainSource reads, or nullptr for other sources.
const ImageChain* ChainOf(const Source& source);

}  // namespace qcow
