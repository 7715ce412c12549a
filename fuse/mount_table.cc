#include "fuse/mount_table.h"

#include <sys/sysmacros.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace qcowfs {
namespace {

// The kernel escapes space, tab, newline and backslash in mountinfo paths as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned code = 0;
    if (s[i] == '\\' && i + 3 < s.size() && std::sscanf(s.c_str() + i + 1, "%3o", &code) == 1) {
      out += static_cast<char>(code);
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::vector<MountEntry> ReadMountTable() {
  std::vector<MountEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
    std::istringstream f(line);
    std::string id, parent, dev, root, mnt, field, type;
    f >> id >> parent >> dev >> root >> mnt;
    while (f >> field && field != "-") {
    }
    f >> type;
    unsigned major_number = 0, minor_number = 0;
    if (std::sscanf(dev.c_str(), "%u:%u", &major_number, &minor_number) != 2) continue;
    out.push_back({makedev(major_number, minor_number), Unescape(mnt), type});
  }
  return out;
}

std::optional<MountEntry> TopMountAt(const std::string& path) {
  std::optional<MountEntry> top;
  for (MountEntry& e : ReadMountTable()) {
    if (e.mount_point == path) top = std::move(e);
  }
  return top;
}

}  // namespace qcowfs
