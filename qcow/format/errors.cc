#include "qcow/format/errors.h"

#include <cerrno>
#include <cstdio>
#include <system_error>

namespace qcow {

void ThrowErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void Refuse(const std::string& what) { throw FormatError(what); }

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace qcow
