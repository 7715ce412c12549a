// VHD files as layers of a chain: where a VHD's metadata is (the footer at the end of a
// file, or its copy at offset 0 when the VHD sits in a larger logical volume), the guest
// size QEMU gives it, the extents its Block Allocation Table and sector bitmaps define, and
// where the parent of a differencing VHD may be (its parent locators, then a search path).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qcow/format/vhd.h"
#include "qcow/sources/image_chain.h"

namespace qcow {

// Returns the VHD metadata of the file open on fd (`head` is its first bytes), or nullopt
// when neither its last sector nor its first is a footer (the cookie "conectix"). The
// footer at the end counts, unless the copy at offset 0 (dynamic and differencing VHDs keep
// one) is valid and of another VHD: then the end holds an older VHD's footer, as the end of
// a logical volume larger than its VHD may; with `volume` (the file is a block device) that
// holds for a fixed footer at the end too. Throws FormatError naming the file and
// what is damaged (a checksum, the dynamic header, tables past the end of the file) and
// std::system_error when the file cannot be read.
std::optional<VhdMetadata> ReadVhdMetadata(int fd, const std::string& path, uint64_t file_size,
                                           std::span<const uint8_t> head, bool volume);

// Returns the guest size QEMU reads for a VHD with this footer: the footer's current size,
// except for images made by Virtual PC ("vpc ") and older QEMU ("qemu"), which size the
// disk by its CHS geometry unless that geometry is the largest one.
uint64_t VhdGuestSize(const VhdFooter& footer);

// Returns "fixed", "dynamic" or "differencing".
const char* VhdDiskTypeName(uint32_t disk_type);

// A place the parent of a differencing VHD may be, and the name the child gives it.
struct VhdParentCandidate {
  std::string path;
  std::string named_as;
};

// Returns where the parent of the differencing VHD `child` may be, in the order to try:
// what each parent locator (W2ku, W2ru, MacX) names, relative to the child's directory, then
// the same names and the parent's unicode name in each search path directory. Throws
// FormatError when a locator lies outside the file.
std::vector<VhdParentCandidate> VhdParentCandidates(const Layer& child,
                                                    const std::vector<std::string>& search_path);

// Returns the extents a dynamic or differencing VHD layer defines (its allocated sectors,
// at 512-byte granularity), in guest order, clipped to its guest size. Throws FormatError
// when a BAT entry points past the end of the file, into the metadata or into another
// block.
std::vector<ChainExtent> VhdBlockExtents(const Layer& layer, uint32_t depth);

// Returns the 16 bytes as a UUID ("8-4-4-4-12" hexadecimal).
std::string UuidText(std::span<const uint8_t, 16> id);

}  // namespace qcow
