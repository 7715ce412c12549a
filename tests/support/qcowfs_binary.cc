// Compiled once for each build of the qcowfs binary, which QCOWFS_BIN names.
#include "qcowfs_binary.h"

namespace qcowfs_test {

std::string QcowfsBinary() { return QCOWFS_BIN; }

bool QcowfsBinarySanitized() {
#if defined(QCOWFS_BIN_SANITIZED) || defined(__SANITIZE_ADDRESS__)
  return true;
#else
  return false;
#endif
}

}  // namespace qcowfs_test
