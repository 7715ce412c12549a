#include "qcow/sources/format_policy.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <string_view>

#include "qcow/format/byte_order.h"
#include "qcow/format/errors.h"
#include "qcow/format/format.h"
#include "qcow/io/file_io.h"
#include "qcow/sources/paths.h"

namespace qcow {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    const char c = s[s.size() - suffix.size() + i];
    if ((c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c) != suffix[i]) return false;
  }
  return true;
}

bool At(std::span<const uint8_t> bytes, size_t offset, std::string_view magic) {
  // Compared as unsigned bytes: magics such as LUKS's and VDI's hold bytes above 0x7f.
  return bytes.size() >= offset + magic.size() &&
         std::equal(magic.begin(), magic.end(), bytes.begin() + offset,
                    [](char m, uint8_t b) { return static_cast<uint8_t>(m) == b; });
}

// VHD footers (and their copies) start with this cookie (VHD specification, "Hard Disk
// Footer Format").
constexpr std::string_view kVhdCookie = "conectix";

// Returns the name of a file with symlinks resolved: the name the SR gave the file, not
// the name of a link to it. A file that does not exist keeps its name (nothing links to
// it); one that exists but cannot be resolved (a path past PATH_MAX, a loop of links) gives
// nullopt, which says nothing of the format.
std::optional<std::string> ResolvedName(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf)) return std::string(buf);
  if (errno == ENOENT) return path;
  return std::nullopt;
}

std::optional<std::string> RealDirectory(const std::string& dir) {
  char buf[PATH_MAX];
  if (!::realpath(dir.c_str(), buf)) return std::nullopt;
  return std::string(buf);
}

// Returns the format's name with "a" or "an" before it.
std::string Article(const std::string& format) {
  return (format.front() == 'a' || format.front() == 'e' || format.front() == 'i' ||
          format.front() == 'o' || format.front() == 'u')
             ? "an " + format
             : "a " + format;
}

}  // namespace

std::optional<LayerFormat> FormatOfName(const std::string& path) {
  const std::optional<std::string> resolved = ResolvedName(path);
  if (!resolved) return std::nullopt;
  const std::string name = BaseName(*resolved);
  if (EndsWith(name, ".qcow2")) return LayerFormat::kQcow2;
  if (EndsWith(name, ".vhd") || EndsWith(name, ".vpc")) return LayerFormat::kVhd;
  if (EndsWith(name, ".raw")) return LayerFormat::kRaw;
  return std::nullopt;
}

std::string ProbedFormat(std::span<const uint8_t> head) {
  if (head.size() >= 4 && LoadBe32(head.data()) == kQcowMagic) return "qcow2";
  if (At(head, 0, kVhdCookie)) return "vpc";
  if (At(head, 0, "vhdxfile")) return "vhdx";
  if (At(head, 0, std::string_view("QED\0", 4))) return "qed";
  if (At(head, 0, "KDMV") || At(head, 0, "COWD") || At(head, 0, "# Disk DescriptorFile")) {
    return "vmdk";
  }
  if (At(head, 0, "LUKS\xba\xbe")) return "luks";
  if (At(head, 64, "\x7f\x10\xda\xbe")) return "vdi";
  if (At(head, 0, "Bochs Virtual HD Image")) return "bochs";
  if (At(head, 0, "WithoutFreeSpace") || At(head, 0, "WithouFreSpacExt")) return "parallels";
  if (At(head, 0, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop")) return "cloop";
  return "";
}

TailReader TailOf(int fd, const std::string& path, uint64_t size) {
  return [=] {
    std::vector<uint8_t> tail(std::min<uint64_t>(size, 512));
    tail.resize(PreadUpTo(fd, path, size - tail.size(), tail.data(), tail.size()));
    // Leave no page in the cache that was not there (see TailReader); a page that was dirty
    // stays.
    (void)::posix_fadvise(fd, static_cast<off_t>(size - tail.size()), 0, POSIX_FADV_DONTNEED);
    return tail;
  };
}

LayerFormat DecideFormat(const std::string& path, const struct stat& st,
                         std::span<const uint8_t> head, const TailReader& tail, FormatRole role,
                         const std::function<void(const std::string&)>& warn) {
  const std::string probed = ProbedFormat(head);
  const std::optional<LayerFormat> by_name =
      role == FormatRole::kMetadata ? std::nullopt : FormatOfName(path);
  // A fixed VHD has its only footer in its last sector (read only when the name says
  // nothing: see TailReader).
  const auto looks_like = [&] {
    return probed.empty() && At(tail(), 0, kVhdCookie) ? std::string("vpc") : probed;
  };
  if (role == FormatRole::kMetadata) {
    const std::string looks = looks_like();
    // Named as metadata by the caller: written by the SR, so its bytes may decide.
    if (looks == "qcow2") return LayerFormat::kQcow2;
    if (looks == "vpc") return LayerFormat::kVhd;
    return LayerFormat::kRaw;
  }
  const auto what = [](const std::string& looks) { return looks == "vpc" ? "VHD" : looks; };
  if (role == FormatRole::kBacking) {
    // QEMU probes a backing file whose format the image does not record. What it would
    // read as raw is raw here too; what it would read as an image is one only when the
    // file's name says so as well, since a guest may have written those bytes.
    if (probed.empty()) return LayerFormat::kRaw;
    if (probed == "qcow2" && by_name == LayerFormat::kQcow2) return LayerFormat::kQcow2;
    if (probed == "vpc" && by_name == LayerFormat::kVhd) return LayerFormat::kVhd;
    if (probed != "qcow2" && probed != "vpc") {
      Refuse(path + " is " + Article(what(probed)) +
             " image (probed: the image above records no backing format); qcowfs reads raw, "
             "qcow2 and vpc (VHD) backing files");
    }
    Refuse(path + " looks like " + Article(what(probed)) +
           " image, but the image above records no backing format and the file's name does "
           "not say it is one: a guest may have written those bytes into a raw disk. If it "
           "is an image, record its format (qemu-img rebase -u -F " +
           probed + ")");
  }
  if (by_name) return *by_name;
  const std::string looks = looks_like();
  if (looks.empty()) return LayerFormat::kRaw;
  if (S_ISBLK(st.st_mode)) {
    if (warn) {
      warn(path + ": read as a raw disk although it looks like " + Article(what(looks)) +
           " image: the format of a block device is never taken from its bytes, which its "
           "guest writes (give --source-format qcow2 or vhd if it holds an image)");
    }
    return LayerFormat::kRaw;
  }
  const bool readable = looks == "qcow2" || looks == "vpc";
  Refuse(path + " looks like " + Article(what(looks)) +
         " image, but its name does not say so (.qcow2, .vhd or .raw) and a guest may write "
         "such bytes into a raw disk: give --source-format " +
         (readable ? (looks == "vpc" ? std::string("vhd") : looks) + " to read it as an image, or "
                   : std::string()) +
         "--source-format raw to export its bytes as they are");
}

LayerFormat DecideFormatOf(const std::string& path, FormatRole role,
                           const std::function<void(const std::string&)>& warn) {
  struct stat st;
  uint64_t size = 0;
  const int fd = OpenDisk(path, 0, &st, &size);
  try {
    std::vector<uint8_t> head(512);
    head.resize(PreadUpTo(fd, path, 0, head.data(), head.size()));
    const LayerFormat format = DecideFormat(path, st, head, TailOf(fd, path, size), role, warn);
    ::close(fd);
    return format;
  } catch (...) {
    ::close(fd);
    throw;
  }
}

bool AllowedFromBlockDevice(const std::string& candidate, const std::string& image_path,
                            const std::vector<std::string>& search_path) {
  // A block device itself (stat follows links, as LVs are links to dm nodes): not a link to
  // a file or to /proc/self/fd/0, not a character device.
  struct stat st;
  if (::stat(candidate.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) return false;
  const std::optional<std::string> dir = RealDirectory(DirName(candidate));
  if (!dir) return false;
  if (RealDirectory(DirName(image_path)) == dir) return true;
  for (const std::string& allowed : search_path) {
    if (RealDirectory(allowed) == dir) return true;
  }
  return false;
}

}  // namespace qcow
