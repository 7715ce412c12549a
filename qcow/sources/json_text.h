// A streaming reader over the JSON documents qcowfs takes from others (qemu-img map and
// info --output=json, qcow-stream-tool's read_headers): values are read as the caller walks
// the document, nothing is built. Text is pulled in chunks of kChunk bytes and only a
// bounded window is ever held, so that junk or an endless writer costs neither memory nor
// an unbounded read: a key, a string, a number, a run of white space or a nesting deeper
// than the limits below is refused with the byte it reached.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qcow {

class JsonText {
 public:
  // Reads up to n bytes into buf; returns 0 at the end of the text. May throw.
  using Pull = std::function<size_t(char* buf, size_t n)>;

  static constexpr size_t kChunk = 64 << 10;      // bytes pulled at once
  static constexpr size_t kMaxKey = 4 << 10;      // an object's keys
  static constexpr size_t kMaxString = 64 << 10;  // any string (file names escaped 6 to 1)
  static constexpr size_t kMaxNumber = 32;        // a number's text (%.17g doubles fit)
  static constexpr size_t kMaxDigits = 20;        // an integer's digits (2^64 has 20)
  static constexpr size_t kMaxSpace = 4 << 10;    // one run of white space
  static constexpr int kMaxDepth = 16;            // qemu-img info nests about 7 deep

  // `what` starts every refusal ("fd:5: not qemu-img map JSON").
  JsonText(Pull pull, std::string what);

  // Refuses (FormatError) with `what`, the reason and the byte where reading stopped.
  [[noreturn]] void Fail(const std::string& reason) const;
  // Returns the next byte after white space, or -1 at the end of the text.
  int Peek();
  // Consumes c, or refuses naming what was found instead.
  void Expect(char c);
  // Reads a string of at most max_bytes (escapes kept as the escaped character).
  std::string String(size_t max_bytes = kMaxString);
  // Reads a non-negative integer, or refuses.
  uint64_t Unsigned();
  // Reads a scalar: a non-negative integer below 2^64, or a boolean as 0 or 1; nullopt for
  // a string, null, any other number, an array or an object (skipped).
  std::optional<uint64_t> Value();
  // Skips any value.
  void Skip();
  // Reads an object, calling member(key) with the reader at the member's value, which
  // member must consume.
  void Object(const std::function<void(const std::string& key)>& member);
  // Reads an array, calling element() at each element, which it must consume.
  void Array(const std::function<void()>& element);
  // Refuses if anything but white space is left.
  void End();

  // Returns the number of bytes consumed.
  uint64_t offset() const { return base_ + pos_; }
  // Refuses, with `reason`, to read the byte at offset `end` or past it (until the next
  // call; UINT64_MAX lifts the bound).
  void Bound(uint64_t end, std::string reason);

 private:
  // Returns the byte at offset() (pulling a chunk when needed), or -1 at the end.
  int Byte();
  void Advance() { ++pos_; }
  void Word(std::string_view word);
  // Reads a number's text: its value when it is a non-negative integer below 2^64.
  std::optional<uint64_t> Number();
  // Reads open, items separated by commas, close.
  void Sequence(char open, char close, const std::function<void()>& item);
  // Describes the byte b for messages.
  static std::string Describe(int b);

  Pull pull_;
  std::string what_;
  std::vector<char> buf_;
  size_t pos_ = 0, len_ = 0;  // the unread bytes are buf_[pos_, len_)
  uint64_t base_ = 0;         // the offset of buf_[0] in the text
  bool eof_ = false;
  int depth_ = 0;
  uint64_t bound_ = UINT64_MAX;
  std::string bound_reason_;
};

// Returns a Pull over text held in memory (which must outlive it).
JsonText::Pull PullFromText(std::string_view text);
// Returns a Pull reading a descriptor (a pipe, a socket, a file from its current position);
// it throws std::system_error naming `name`.
JsonText::Pull PullFromFd(int fd, std::string name);

}  // namespace qcow
