// The vhd-tool options xapi passes, accepted where they change nothing for qcow2 and
// refused with a clear message where they cannot be honoured.
#pragma once

#include <string>

namespace qcowfs {

struct XapiArgs {
  std::string source_protocol = "none";
  std::string destination_protocol = "none";
  std::string source_format;
  std::string destination_format;
  std::string tar_filename_prefix;
  std::string path;
  std::string relative_to;
};

// Throws UsageError unless the options describe `image_side` ("source" or "destination")
// as qcow2 and the other side as raw, with no protocol and no delta.
void CheckXapiOptions(const XapiArgs& args, const std::string& image_side);

}  // namespace qcowfs
