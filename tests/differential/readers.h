// The three readers the differential test holds against each other, each turning a qcow2
// image into its guest view (a raw file) or a refusal: qemu-img convert, the import decoder
// (StreamDecoder into a RawTarget, as serve and the mount feed it) and the chain reader as
// an export source (OpenSource, then the export written and read back by qemu-img). The
// two qcowfs readers run in a child process each, so that a crash or a hang is recorded
// against the image that caused it rather than ending the run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace qcowfs_test {

struct Verdict {
  enum class Outcome : uint8_t {
    kAccepted,    // the guest view is in the output file
    kRefused,     // a refusal of the kind the reader documents (a bad image, an I/O error)
    kTooLarge,    // accepted, but its virtual size is over the test's limit: not compared
    kUnexpected,  // an exception of a type the reader does not document
    kCrashed,     // the child died of a signal or a sanitizer report
    kHung,        // the child did not finish in time
  };
  Outcome outcome = Outcome::kRefused;
  std::string message;
  bool accepted() const { return outcome == Outcome::kAccepted; }
};

// Returns a short name of the outcome ("accepted", "refused", ...).
const char* OutcomeName(Verdict::Outcome o);

// Virtual sizes above this are not read whole by any reader.
constexpr uint64_t kMaxVirtualSize = 64ull << 20;

// qemu-img convert -f qcow2 -O raw IMAGE OUT (qemu-img info alone when the header's size is
// over kMaxVirtualSize).
Verdict QemuView(const std::string& image, const std::string& out, uint64_t header_size);

// qemu-img check's exit status (0 clean, 1 not checked, 2 corrupt, 3 leaks only) and the
// first line it printed that says what is wrong.
struct QemuCheck {
  int status = 0;
  std::string first_problem;
};
QemuCheck RunQemuCheck(const std::string& image);

// The import decoder, fed the image front to back in chunks of `chunk` bytes, into `target`
// (created with `target_size` bytes of a non-zero pattern, so that zeroing shows).
Verdict ImportView(const std::string& image, const std::string& target, uint64_t target_size,
                   uint64_t chunk, const std::string& spool_dir);

// The chain reader: the source's guest view read with ReadAt into `out`, and the export
// (64 KiB clusters) written to `export_image`.
Verdict ChainView(const std::string& image, const std::string& out,
                  const std::string& export_image);

// Returns the first offset at which the two files differ (the shorter one's size when one
// is a prefix of the other), or nothing when they are equal.
std::optional<uint64_t> FirstDifference(const std::string& a, const std::string& b);

}  // namespace qcowfs_test
