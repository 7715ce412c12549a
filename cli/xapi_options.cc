#include "cli/xapi_options.h"

#include "qcow/format/errors.h"

namespace qcowfs {

void CheckXapiOptions(const XapiArgs& a, const std::string& image_side) {
  for (const auto& [name, value] : {std::pair{"--source-protocol", a.source_protocol},
                                    std::pair{"--destination-protocol", a.destination_protocol}}) {
    if (value != "none") {
      throw qcow::UsageError(std::string(name) + " is '" + value +
                             "'; qcowfs supports only 'none' (direct file descriptors)");
    }
  }
  const bool image_is_source = image_side == "source";
  const std::string& image_format = image_is_source ? a.source_format : a.destination_format;
  const std::string& raw_format = image_is_source ? a.destination_format : a.source_format;
  const std::string image_opt = image_is_source ? "--source-format" : "--destination-format";
  const std::string raw_opt = image_is_source ? "--destination-format" : "--source-format";
  if (!image_format.empty() && image_format != "qcow2") {
    throw qcow::UsageError(image_opt + " is '" + image_format + "'; qcowfs " +
                           (image_is_source ? "reads" : "writes") + " only qcow2");
  }
  if (!raw_format.empty() && raw_format != "raw") {
    throw qcow::UsageError(raw_opt + " is '" + raw_format + "'; the disk side must be 'raw'");
  }
  if (!a.relative_to.empty()) {
    throw qcow::UsageError("--relative-to " + a.relative_to +
                           ": serve imports whole images; deltas are exported with stream "
                           "--relative-to");
  }
}

}  // namespace qcowfs
