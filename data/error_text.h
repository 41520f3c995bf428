// data/error_text.h — bytes read from a file (a key, a tensor name) made fit for a one-line
// error message: control bytes (< 0x20, 0x7F) become \xNN, everything else is kept.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace kvt {

inline std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (c >= 0x20 && c != 0x7F) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace kvt
