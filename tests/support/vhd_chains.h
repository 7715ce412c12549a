// Chains of differencing VHDs for the VHD export tests, written by the test's own VHD
// writer (vhd_writer.h) with random writes at odd byte offsets, so that clusters mix
// sectors of several layers, and judged by libvhdi (tests/tools/vhd_judge.py).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "test_util.h"
#include "vhd_writer.h"

namespace qcowfs_test {

struct VhdChainCase {
  const char* name;
  int depth;  // differencing layers over the dynamic base
  uint64_t size;
  uint32_t block_size;
  // How each child names its parent.
  enum class Find {
    kLocators,    // MacX, W2ru and W2ku, the parent beside the child
    kSubdir,      // the layers below the top in a sub-directory, MacX only
    kW2kuOnly,    // an absolute Windows path only ("C:\vms\..."): found by its file name
    kSearchPath,  // the locators name a directory that does not exist: found with --path
    kLvPadding,   // as kLocators, each file padded past its footer as in a logical volume
  } find;
  uint64_t seed;
  // Judged by libvhdi (bitmaps padded to what it reads right, see PadForLibvhdi), or by the
  // writer's own Expected() (bitmaps as written; the writer is judged by libvhdi's model
  // in vhd_writer_tests).
  bool libvhdi = true;
};

// Chains of depth 1, 2 and 5 and each way of finding parents.
const std::vector<VhdChainCase>& VhdChainCases();

struct VhdChain {
  std::string top;                 // path of the top
  std::vector<std::string> files;  // every layer's path, the top first
  std::vector<VhdImage> layers;    // the same layers, the top first
  std::string path_option;         // " --path DIR" when the chain needs one, else ""
  std::string reference;           // the top's guest content (libvhdi's reading)
};

// Writes chain `c` into dir with its reference (fails the test on error).
VhdChain BuildVhdChain(const TempDir& dir, const VhdChainCase& c);

// Runs the libvhdi judge: writes the guest content of the VHD at `top` to `out`; returns
// its output and status.
CommandResult JudgeVhd(const std::string& top, const std::string& out,
                       const std::string& search_dir = "");

// Returns the clusters of 2^bits bytes in which any of layers[0, count) holds a sector, as
// sorted (first, count) runs.
std::vector<std::pair<uint64_t, uint64_t>> VhdClusters(const std::vector<VhdImage>& layers,
                                                       size_t count, uint32_t bits);

// Expects the qcow2 file `image` to read as the chain's reference, to pass qemu-img check,
// and to hold exactly the clusters (of its cluster size, 2^bits) some layer allocates.
void ExpectExportsChain(const VhdChain& chain, const std::string& image, uint32_t bits = 16);

// Returns the unique id as a UUID ("8-4-4-4-12" hexadecimal), as qcowfs prints it.
std::string UuidString(const VhdUuid& id);

}  // namespace qcowfs_test
