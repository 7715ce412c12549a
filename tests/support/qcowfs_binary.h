// The qcowfs binary the suites run.
#pragma once

#include <string>

namespace qcowfs_test {

// The path of the qcowfs binary: the plain build's, or the sanitized twin's in a suite's
// sanitized twin (tests/CMakeLists.txt, qcow_for_tests).
std::string QcowfsBinary();

// Whether that binary was built with AddressSanitizer: slower to start and to exit, and
// larger in memory.
bool QcowfsBinarySanitized();

}  // namespace qcowfs_test
