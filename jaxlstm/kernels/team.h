// A team of workers for one kernel call: the calling thread plus tasks on a thread pool, with
// a barrier between the steps of the recurrence.
//
// The work is cut into `slots` (slices of hidden units). Each slot is run by exactly one
// thread. A pool task claims its slot when it starts; a slot whose task has not started
// within the timeout is taken over by the calling thread, so a busy or single-threaded pool
// costs time, never a deadlock. A task that starts after that finds its slot taken and
// returns at once, touching nothing of the call.
#pragma once

#include <atomic>
#include <functional>
#include <vector>

#include "kernels.h"

namespace jaxlstm {

class Barrier {
 public:
  explicit Barrier(int participants) : participants_(participants) {}
  void wait();

 private:
  const int participants_;
  std::atomic<int> arrived_{0};
  std::atomic<unsigned> generation_{0};
};

// What one thread of the team runs: its slots, in order, and the barrier to meet the others at.
struct Member {
  std::vector<int> slots;
  Barrier* barrier;
};

// Runs body(member) on up to `slots` threads (the caller among them) and returns when every
// slot's work is done.
void run_team(int slots, const Threads& threads, const std::function<void(const Member&)>& body);

// Spin-wait politely: a pause instruction, and after a while a yield to the scheduler.
void relax(int& spins);

}  // namespace jaxlstm
