// Bad qcow2 images for the refusal tests: made by qemu-img/qemu-io, then patched.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace qcowfs_test {

struct BadCase {
  const char* name;
  std::string commands;                           // leave img.qcow2 in the directory
  std::function<void(const std::string&)> patch;  // edits img.qcow2, may be null
  int err;                                        // errno the import must end with
  const char* says;                               // substring of the status error line
  bool header_level;                              // target must stay unchanged
  uint64_t target_size = 0;                       // 0: the image's virtual size
};

// Every refusal the import issue lists, and truncation at several points.
const std::vector<BadCase>& BadImages();

}  // namespace qcowfs_test
