// c10d's TCPStore behind a C ABI: the key-value rendezvous torch.distributed starts from
// (`torchrun` and `init_process_group("env://")` put one on MASTER_ADDR:MASTER_PORT). Rank 0
// hosts it; every rank connects. Same conventions as ext.cpp: nullptr on success, else a
// malloc'd message freed with ember_ext_free; no C++ exception crosses into Rust.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "guard.h"

namespace {

struct Store {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

}  // namespace

extern "C" {

// Connects to (or, with is_server, hosts and waits for world_size members of) the store at
// host:port. Every operation, and the wait for the members, ends after timeout_ms.
char* ember_store_connect(const char* host, uint16_t port, bool is_server, int64_t world_size,
                          int64_t timeout_ms, void** out) {
  return ember::guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new Store{std::move(store)};
  });
}

void ember_store_free(void* store) { delete static_cast<Store*>(store); }

char* ember_store_set(void* store, const char* key, const uint8_t* data, size_t len) {
  return ember::guarded([&] {
    std::vector<uint8_t> value(data, data + len);
    static_cast<Store*>(store)->store->set(std::string(key), value);
  });
}

// The value of key (waiting for it up to the store's timeout), in *data (malloc'd; free it
// with ember_ext_free) and *len.
char* ember_store_get(void* store, const char* key, uint8_t** data, size_t* len) {
  return ember::guarded([&] {
    auto value = static_cast<Store*>(store)->store->get(std::string(key));
    *len = value.size();
    *data = static_cast<uint8_t*>(std::malloc(value.size() > 0 ? value.size() : 1));
    if (*data == nullptr) throw std::bad_alloc();
    if (!value.empty()) std::memcpy(*data, value.data(), value.size());
  });
}

// Adds delta to the integer at key (0 when absent) and returns the sum in *out.
char* ember_store_add(void* store, const char* key, int64_t delta, int64_t* out) {
  return ember::guarded([&] { *out = static_cast<Store*>(store)->store->add(std::string(key), delta); });
}

}  // extern "C"
