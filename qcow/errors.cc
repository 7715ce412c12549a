#include "qcow/errors.h"

#include <cerrno>
#include <system_error>

namespace qcow {

void ThrowErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace qcow
