#include "qcow/sources/json_text.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "qcow/format/errors.h"
#include "qcow/io/wait_io.h"

namespace qcow {
namespace {

bool IsSpace(int b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r'; }
bool IsDigit(int b) { return b >= '0' && b <= '9'; }

// The one read of a descriptor: n bytes at most, 0 at its end. Throws std::system_error.
// A descriptor a caller set O_NONBLOCK on (a pipe from xapi) is waited on, not refused.
size_t ReadSome(int fd, char* buf, size_t n, const std::string& name) {
  const ssize_t r = ReadWaiting(fd, buf, n);
  if (r < 0) ThrowErrno("reading " + name);
  return static_cast<size_t>(r);
}

}  // namespace

JsonText::JsonText(Pull pull, std::string what)
    : pull_(std::move(pull)), what_(std::move(what)), buf_(kChunk) {}

JsonText::Pull PullFromText(std::string_view text) {
  return [text, at = size_t{0}](char* buf, size_t n) mutable {
    n = std::min(n, text.size() - at);
    std::memcpy(buf, text.data() + at, n);
    at += n;
    return n;
  };
}

JsonText::Pull PullFromFd(int fd, std::string name) {
  return [fd, name = std::move(name)](char* buf, size_t n) { return ReadSome(fd, buf, n, name); };
}

void JsonText::Fail(const std::string& reason) const {
  Refuse(what_ + ": " + reason + " at byte " + std::to_string(offset()));
}

void JsonText::Bound(uint64_t end, std::string reason) {
  bound_ = end;
  bound_reason_ = std::move(reason);
}

int JsonText::Byte() {
  if (offset() >= bound_) Fail(bound_reason_);
  if (pos_ == len_) {
    if (eof_) return -1;
    base_ += len_;
    pos_ = 0;
    len_ = pull_(buf_.data(), buf_.size());
    if (len_ == 0) {
      eof_ = true;
      return -1;
    }
  }
  return static_cast<unsigned char>(buf_[pos_]);
}

std::string JsonText::Describe(int b) {
  static const char kHex[] = "0123456789abcdef";
  if (b < 0) return "the end of the text";
  if (b >= 0x20 && b < 0x7f) return std::string("'") + static_cast<char>(b) + "'";
  return std::string("the byte 0x") + kHex[b >> 4] + kHex[b & 15];
}

int JsonText::Peek() {
  for (size_t run = 0;; ++run) {
    const int b = Byte();
    if (!IsSpace(b)) return b;
    if (run == kMaxSpace) Fail("more than " + std::to_string(kMaxSpace) + " bytes of white space");
    Advance();
  }
}

void JsonText::Expect(char c) {
  const int b = Peek();
  if (b != static_cast<unsigned char>(c)) {
    Fail(std::string("expected '") + c + "', found " + Describe(b));
  }
  Advance();
}

std::string JsonText::String(size_t max_bytes) {
  Expect('"');
  std::string out;
  for (;;) {
    int b = Byte();
    if (b < 0) Fail("unterminated string");
    if (b == '"') {
      Advance();
      return out;
    }
    if (b < 0x20) Fail("a control character (" + Describe(b) + ") in a string");
    if (out.size() == max_bytes)
      Fail("a string longer than " + std::to_string(max_bytes) + " bytes");
    Advance();
    if (b == '\\') {  // names and file names: escapes kept as the next byte
      b = Byte();
      if (b < 0) Fail("unterminated string");
      Advance();
    }
    out += static_cast<char>(b);
  }
}

std::optional<uint64_t> JsonText::Number() {
  const uint64_t start = offset();
  auto length_ok = [&] {
    if (offset() - start >= kMaxNumber) {
      Fail("a number longer than " + std::to_string(kMaxNumber) + " bytes");
    }
  };
  auto digits = [&](size_t* count) {
    if (!IsDigit(Byte())) Fail("expected a digit, found " + Describe(Byte()));
    while (IsDigit(Byte())) {
      length_ok();
      ++*count;
      Advance();
    }
  };
  bool integer = true;
  if (Byte() == '-') {
    integer = false;
    Advance();
  }
  // The integer part, its value kept while it fits.
  if (!IsDigit(Byte())) Fail("expected a value, found " + Describe(Byte()));
  uint64_t v = 0;
  size_t n = 0;
  for (int b = Byte(); IsDigit(b); b = Byte()) {
    if (++n > kMaxDigits) Fail("a number longer than " + std::to_string(kMaxDigits) + " digits");
    const uint64_t d = static_cast<uint64_t>(b - '0');
    if (v > (UINT64_MAX - d) / 10) integer = false;
    v = v * 10 + d;
    Advance();
  }
  if (Byte() == '.') {
    integer = false;
    Advance();
    digits(&n);
  }
  if (Byte() == 'e' || Byte() == 'E') {
    integer = false;
    Advance();
    if (Byte() == '+' || Byte() == '-') Advance();
    digits(&n);
  }
  if (!integer) return std::nullopt;
  return v;
}

uint64_t JsonText::Unsigned() {
  const int b = Peek();
  if (!IsDigit(b)) Fail("expected a non-negative integer, found " + Describe(b));
  const std::optional<uint64_t> v = Number();
  if (!v) Fail("expected a non-negative integer below 2^64");
  return *v;
}

void JsonText::Word(std::string_view word) {
  for (const char c : word) {
    if (Byte() != c) Fail("expected '" + std::string(word) + "', found " + Describe(Byte()));
    Advance();
  }
}

std::optional<uint64_t> JsonText::Value() {
  const int b = Peek();
  if (b == 't') {
    Word("true");
    return 1;
  }
  if (b == 'f') {
    Word("false");
    return 0;
  }
  if (b == '-' || IsDigit(b)) return Number();
  Skip();
  return std::nullopt;
}

void JsonText::Skip() {
  const int b = Peek();
  if (b == '"') {
    String();
  } else if (b == '{') {
    Object([this](const std::string&) { Skip(); });
  } else if (b == '[') {
    Array([this] { Skip(); });
  } else if (b == 't') {
    Word("true");
  } else if (b == 'f') {
    Word("false");
  } else if (b == 'n') {
    Word("null");
  } else if (b == '-' || IsDigit(b)) {
    Number();
  } else {
    Fail("expected a value, found " + Describe(b));
  }
}

void JsonText::Sequence(char open, char close, const std::function<void()>& item) {
  if (++depth_ > kMaxDepth) {
    Fail("values nested more than " + std::to_string(kMaxDepth) + " deep");
  }
  Expect(open);
  if (Peek() == close) {
    Advance();
  } else {
    for (;;) {
      item();
      if (Peek() != ',') break;
      Advance();
    }
    Expect(close);
  }
  --depth_;
}

void JsonText::Object(const std::function<void(const std::string& key)>& member) {
  Sequence('{', '}', [&] {
    const std::string key = String(kMaxKey);
    Expect(':');
    member(key);
  });
}

void JsonText::Array(const std::function<void()>& element) { Sequence('[', ']', element); }

void JsonText::End() {
  const int b = Peek();
  if (b >= 0) Fail("text after the end of the value (" + Describe(b) + ")");
}

}  // namespace qcow
