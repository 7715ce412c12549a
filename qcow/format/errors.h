// Typed errors thrown by the qcow library. I/O failures use std::system_error.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace qcow {

// A qcow2 image (or a request about one) breaks the format's rules. The message names the
// field, the value seen and what is allowed.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A caller asked for something the library cannot do with these inputs (for example a
// cluster size outside 512 B..2 MiB, or a disk too large for the chosen cluster size).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws std::system_error for the current errno, prefixed with what was being done.
[[noreturn]] void ThrowErrno(const std::string& what);

// Throws FormatError(what): the image is refused for this reason.
[[noreturn]] void Refuse(const std::string& what);

// Returns v as "0x..." for messages about offsets and raw entries.
std::string Hex(uint64_t v);

}  // namespace qcow
