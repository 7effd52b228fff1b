// What the shim's files share: a C++ call behind the C ABI returns nullptr on success or a
// malloc'd message (freed by the Rust side with ember_ext_free), so no exception crosses into
// Rust.
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>

namespace ember {

inline char* message(const char* what) {
  char* m = static_cast<char*>(std::malloc(std::strlen(what) + 1));
  if (m != nullptr) std::strcpy(m, what);
  return m;
}

template <typename F>
char* guarded(F f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception& e) {
    return message(e.what());
  } catch (...) {
    return message("unknown C++ exception");
  }
}

}  // namespace ember
