// File name arithmetic for resolving the names images give their backing files and parents.
#pragma once

#include <string>

namespace qcow {

// Returns the directory part of path ("." when it has none, "/" for a file at the root).
inline std::string DirName(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Returns the part of path after its last '/'.
inline std::string BaseName(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace qcow
