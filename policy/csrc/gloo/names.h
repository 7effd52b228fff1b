// The gloo names that c10d's ProcessGroupGloo.hpp mentions, declared and nothing more.
//
// The torch wheel ships ProcessGroupGloo.hpp but not gloo's own headers, which it includes. gloo
// itself is compiled into libtorch_cpu.so; Ember only calls c10d functions that libtorch exports
// (the ProcessGroupGloo constructor, Options::create_default, the collectives through the
// Backend vtable). In that header every gloo type sits behind a pointer (shared_ptr,
// unique_ptr), so the layout of c10d's classes does not depend on gloo's, and names are all the
// compiler needs. ProcessGroupGloo.hpp's inline GlooStore overrides gloo's Store and its inline
// setTimeout calls Context::setTimeout, hence those two members. Ember never constructs,
// copies or destroys a gloo object itself: never use these types for anything but pointers.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

namespace rendezvous {

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};

}  // namespace rendezvous

namespace transport {

class Device;
class UnboundBuffer;

}  // namespace transport

}  // namespace gloo
