// A reader over the small JSON documents qemu-img and xapi's tools print (qemu-img map and
// info --output=json, qcow-stream-tool's read_headers): values are read as the caller walks
// the document, nothing is built.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace qcow {

class JsonText {
 public:
  // `what` starts every refusal ("fd:5: not qemu-img map JSON").
  JsonText(std::string_view text, std::string what) : s_(text), what_(std::move(what)) {}

  // Refuses (FormatError) with `what`, the reason and the byte where reading stopped.
  [[noreturn]] void Fail(const std::string& reason) const;
  // Returns the next character after white space, or '\0' at the end.
  char Peek();
  // Consumes c, or refuses.
  void Expect(char c);
  // Reads a string (escapes kept as the escaped character).
  std::string String();
  // Reads a non-negative integer, or refuses.
  uint64_t Unsigned();
  // Reads a scalar: a non-negative integer, or a boolean as 0 or 1; nullopt for a string,
  // null, any other number, an array or an object (skipped).
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

 private:
  bool Word(std::string_view word);
  // Reads open, items separated by commas, close.
  void Sequence(char open, char close, const std::function<void()>& item);

  std::string_view s_;
  std::string what_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace qcow
