// Who decides what format a disk is read in. A guest writes every byte of its raw disk, so
// those bytes never decide that the disk is an image: an image's header names other files
// (backing files, VHD parents) and its own size, and a raw disk read as one would let the
// guest export host files or other tenants' disks (QEMU's best-known CVE class). The format
// comes from the caller (--source-format, a command that takes only images, metadata named
// as such) or from the file's name, which the SR or the admin chose (UUID.qcow2, UUID.vhd,
// UUID.raw); the bytes only confirm it, or make a choice ambiguous.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qcow/sources/image_chain.h"

namespace qcow {

// Returns the format the name of the file at path gives, symlinks resolved (the name the SR
// gave the file, not the name of a link to it): ".qcow2" qcow2, ".vhd" and ".vpc" VHD, ".raw"
// raw (the names XCP-ng's file SRs use; case does not matter), nullopt for any other name
// and for a path that cannot be resolved.
std::optional<LayerFormat> FormatOfName(const std::string& path);

// Returns the image format QEMU would probe from a file's first bytes: "qcow2", "vpc" (a
// footer copy at offset 0), "vmdk", "vhdx", "qed", "luks", "vdi", "bochs", "parallels",
// "cloop", or "" when they look raw.
std::string ProbedFormat(std::span<const uint8_t> head);

// Where a file whose format nobody named sits in what is being read.
enum class FormatRole {
  kTop,       // the disk the command was given
  kBacking,   // a backing file whose format the image above does not record
  kMetadata,  // a file the caller named as metadata (--allocation-from)
};

// Returns the last 512 bytes of a file (fewer when it is shorter). Read only when needed,
// and dropped from the page cache after: a page of an unwritten extent in the cache is data
// to ext4's SEEK_DATA, which the export and `map` read as QEMU does.
using TailReader = std::function<std::vector<uint8_t>()>;

// Returns the format to read the file at `path` in (`st` its stat, `head` its first bytes,
// `tail` reads its last sector), when nobody named one:
// - kMetadata: its bytes decide (qcow2 magic, a VHD footer at its end or start), else raw.
// - kTop: its name decides; a block device, or a file whose name says nothing, is raw.
//   A block device that looks like an image gets a warning (through `warn`); a regular file
//   with such a name that looks like an image is refused as ambiguous.
// - kBacking: raw when QEMU would probe it as raw; a format QEMU would probe only when the
//   file's name says the same; anything else is refused as ambiguous.
// Throws FormatError naming the file, what its bytes look like and what to do.
LayerFormat DecideFormat(const std::string& path, const struct stat& st,
                         std::span<const uint8_t> head, const TailReader& tail, FormatRole role,
                         const std::function<void(const std::string&)>& warn);

// Returns a TailReader for the file open on fd, `size` bytes long.
TailReader TailOf(int fd, const std::string& path, uint64_t size);

// Opens the file at path and returns DecideFormat's answer for it. Throws as DecideFormat,
// and std::system_error/UsageError as OpenDisk.
LayerFormat DecideFormatOf(const std::string& path, FormatRole role,
                           const std::function<void(const std::string&)>& warn);

// Whether `candidate`, a backing file or parent named by the image at `image_path` (on a
// block device), may be opened: it is a block device (links followed, as LVs are links to
// device-mapper nodes) whose name lies in the image's own directory or one of `search_path`
// (compared with `..` and symlinked directories resolved).
bool AllowedFromBlockDevice(const std::string& candidate, const std::string& image_path,
                            const std::vector<std::string>& search_path);

}  // namespace qcow
