#include "qcow/sources/json_text.h"

#include <cctype>
#include <charconv>

#include "qcow/format/errors.h"

namespace qcow {
namespace {

// Deeper nesting than qemu-img ever prints is refused rather than recursed into.
constexpr int kMaxDepth = 64;

}  // namespace

void JsonText::Fail(const std::string& reason) const {
  Refuse(what_ + ": " + reason + " at byte " + std::to_string(pos_));
}

char JsonText::Peek() {
  while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  return pos_ < s_.size() ? s_[pos_] : '\0';
}

void JsonText::Expect(char c) {
  if (Peek() != c) Fail(std::string("expected '") + c + "'");
  ++pos_;
}

std::string JsonText::String() {
  Expect('"');
  std::string out;
  while (pos_ < s_.size() && s_[pos_] != '"') {
    if (s_[pos_] == '\\') ++pos_;  // names and file names: escapes kept as the next byte
    if (pos_ < s_.size()) out += s_[pos_++];
  }
  if (pos_ >= s_.size()) Fail("unterminated string");
  ++pos_;
  return out;
}

uint64_t JsonText::Unsigned() {
  Peek();
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s_.data() + pos_, s_.data() + s_.size(), v);
  if (ec != std::errc() || end == s_.data() + pos_) Fail("expected a non-negative integer");
  const size_t next = static_cast<size_t>(end - s_.data());
  if (next < s_.size() && (s_[next] == '.' || s_[next] == 'e' || s_[next] == 'E')) {
    Fail("expected a non-negative integer");
  }
  pos_ = next;
  return v;
}

bool JsonText::Word(std::string_view word) {
  if (s_.substr(pos_, word.size()) != word) return false;
  pos_ += word.size();
  return true;
}

std::optional<uint64_t> JsonText::Value() {
  const char c = Peek();
  if (c >= '0' && c <= '9') {
    const size_t start = pos_;
    uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s_.data() + pos_, s_.data() + s_.size(), v);
    const size_t next = static_cast<size_t>(end - s_.data());
    if (ec == std::errc() &&
        (next == s_.size() || (s_[next] != '.' && s_[next] != 'e' && s_[next] != 'E'))) {
      pos_ = next;
      return v;
    }
    pos_ = start;
    Skip();
    return std::nullopt;
  }
  if (Word("true")) return 1;
  if (Word("false")) return 0;
  Skip();
  return std::nullopt;
}

void JsonText::Skip() {
  const char c = Peek();
  if (c == '"') {
    String();
  } else if (c == '{') {
    Object([this](const std::string&) { Skip(); });
  } else if (c == '[') {
    Array([this] { Skip(); });
  } else if (Word("true") || Word("false") || Word("null")) {
  } else if (c == '-' || (c >= '0' && c <= '9')) {
    const size_t start = pos_;
    while (pos_ < s_.size() &&
           (std::isdigit(static_cast<unsigned char>(s_[pos_])) ||
            std::string_view("+-.eE").find(s_[pos_]) != std::string_view::npos)) {
      ++pos_;
    }
    if (pos_ == start + (c == '-' ? 1 : 0)) Fail("expected a value");
  } else {
    Fail("expected a value");
  }
}

void JsonText::Sequence(char open, char close, const std::function<void()>& item) {
  if (++depth_ > kMaxDepth) Fail("values nested too deep");
  Expect(open);
  if (Peek() == close) {
    ++pos_;
  } else {
    for (;;) {
      item();
      if (Peek() != ',') break;
      ++pos_;
    }
    Expect(close);
  }
  --depth_;
}

void JsonText::Object(const std::function<void(const std::string& key)>& member) {
  Sequence('{', '}', [&] {
    const std::string key = String();
    Expect(':');
    member(key);
  });
}

void JsonText::Array(const std::function<void()>& element) { Sequence('[', ']', element); }

void JsonText::End() {
  if (Peek() != '\0') Fail("text after the end of the value");
}

}  // namespace qcow
