// Parsing of size arguments such as "64K", "2MiB" or "512".
#pragma once

#include <cstdint>
#include <string>

namespace qcowfs {

// Returns the byte count for a number with an optional binary suffix (K, M, G, T with or
// without "iB"/"B"). Throws qcow::UsageError naming the text when it is not one.
uint64_t ParseSize(const std::string& text);

// Returns a short human-readable size ("1.5 GiB").
std::string HumanSize(uint64_t bytes);

}  // namespace qcowfs
