// Deltas: what an image of the source must hold so that, over a base, it reads as the
// source. Either the base is a layer of the source's chain (the layers above it say what
// changed), or anything else (contents compared, cluster by cluster).
#pragma once

#include <optional>
#include <string>

#include "qcow/export/cluster_map.h"
#include "qcow/export/export_layout.h"
#include "qcow/export/source.h"
#include "qcow/sources/image_chain.h"

namespace qcow {

struct DeltaPlan {
  ClusterMap data;     // clusters the delta holds (the source's bytes)
  DeltaOptions delta;  // zero clusters, backing file name and format
};

// Returns the position of the file at `path` among the chain's layers (0 is the top), or
// nullopt when it is not one of them. Throws std::system_error when it cannot be stat'ed.
std::optional<uint32_t> FindLayer(const ImageChain& chain, const std::string& path);

// Plans the delta of the chain over its layer `depth`: the data clusters and the zero
// clusters (zero clusters, discards and ranges past a layer's backing file that hide what
// the base holds) of the layers above it, in clusters of 2^bits bytes. A cluster that mixes
// zeros with ranges read from the base is data. The backing name is the one the chain
// writes for the base.
DeltaPlan ChainDelta(const ImageChain& chain, uint32_t depth, uint32_t bits);

// Plans the delta of `source` over `base` by reading both: every cluster that either
// allocates is compared; those that differ are data, or zero clusters where the source
// reads as zeros. A base smaller than the source reads as zeros past its end; what a larger
// one holds past the source's end is ignored. Progress goes to `progress` (bytes compared,
// bytes to compare).
DeltaPlan ComparedDelta(const Source& source, const Source& base, uint32_t bits,
                        const ProgressFn& progress);

}  // namespace qcow
