#include "cli/size_arg.h"

#include <cctype>
#include <cstdio>

#include "qcow/format/errors.h"

namespace qcowfs {

uint64_t ParseSize(const std::string& text) {
  size_t i = 0;
  uint64_t value = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (value > (UINT64_MAX - digit) / 10) throw qcow::UsageError("size " + text + " is too large");
    value = value * 10 + digit;
    ++i;
  }
  std::string suffix = text.substr(i);
  int shift = -1;
  if (i == 0)
    shift = -1;
  else if (suffix.empty() || suffix == "B")
    shift = 0;
  else if (suffix == "K" || suffix == "KiB" || suffix == "k")
    shift = 10;
  else if (suffix == "M" || suffix == "MiB")
    shift = 20;
  else if (suffix == "G" || suffix == "GiB")
    shift = 30;
  else if (suffix == "T" || suffix == "TiB")
    shift = 40;
  if (shift < 0) {
    throw qcow::UsageError("size '" + text +
                           "' is not a number with an optional K, M, G or T suffix");
  }
  if (shift && value > (UINT64_MAX >> shift))
    throw qcow::UsageError("size " + text + " is too large");
  return value << shift;
}

std::string HumanSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, kUnits[u]);
  return buf;
}

}  // namespace qcowfs
