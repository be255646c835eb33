#include "team.h"

#include <chrono>
#include <memory>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace jaxlstm {

void relax(int& spins) {
  if (++spins < 2000) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  } else {
    std::this_thread::yield();
  }
}

void Barrier::wait() {
  if (participants_ == 1) return;
  const unsigned gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == participants_) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    return;
  }
  int spins = 0;
  while (generation_.load(std::memory_order_acquire) == gen) relax(spins);
}

namespace {

enum Claim : int { kOpen = 0, kByHelper = 1, kByCaller = 2 };

// Shared with the pool tasks, which may outlive the call: they hold it by shared_ptr and
// touch `body` and `barrier` only after claiming a slot, which the caller then waits for.
struct TeamState {
  explicit TeamState(int slots) : claims(slots) {}
  std::vector<std::atomic<int>> claims;
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> go{false};
  std::atomic<int> finished{0};
  std::unique_ptr<Barrier> barrier;
  const std::function<void(const Member&)>* body = nullptr;
};

void helper(const std::shared_ptr<TeamState>& state, int slot) {
  // Run inline by a pool that could not schedule it: the caller does this slot itself.
  if (std::this_thread::get_id() == state->caller) return;
  int open = kOpen;
  if (!state->claims[slot].compare_exchange_strong(open, kByHelper)) return;
  int spins = 0;
  while (!state->go.load(std::memory_order_acquire)) relax(spins);
  (*state->body)(Member{{slot}, state->barrier.get()});
  state->finished.fetch_add(1, std::memory_order_release);
}

}  // namespace

void run_team(int slots, const Threads& threads, const std::function<void(const Member&)>& body) {
  if (slots <= 1 || !threads.schedule) {
    Member alone;
    for (int s = 0; s < slots; ++s) alone.slots.push_back(s);
    Barrier barrier(1);
    alone.barrier = &barrier;
    body(alone);
    return;
  }
  auto state = std::make_shared<TeamState>(slots);
  state->body = &body;
  state->claims[0].store(kByCaller);
  for (int s = 1; s < slots; ++s) {
    threads.schedule([state, s] { helper(state, s); });
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::microseconds(threads.start_timeout_us);
  auto all_claimed = [&] {
    for (int s = 1; s < slots; ++s)
      if (state->claims[s].load(std::memory_order_acquire) == kOpen) return false;
    return true;
  };
  int spins = 0;
  while (!all_claimed() && std::chrono::steady_clock::now() < deadline) relax(spins);
  Member caller;
  caller.slots.push_back(0);
  int helpers = 0;
  for (int s = 1; s < slots; ++s) {
    int open = kOpen;
    if (state->claims[s].compare_exchange_strong(open, kByCaller)) {
      caller.slots.push_back(s);
    } else {
      ++helpers;
    }
  }
  state->barrier = std::make_unique<Barrier>(1 + helpers);
  caller.barrier = state->barrier.get();
  state->go.store(true, std::memory_order_release);
  body(caller);
  spins = 0;
  while (state->finished.load(std::memory_order_acquire) != helpers) relax(spins);
}

}  // namespace jaxlstm
