//! Group commit: a store writes one push transaction at a time per
//! process (SQLite has one writer; PostgreSQL serialises log appends), and
//! each commit costs a sync to disk, so pushes that arrive while one is
//! being written wait in a queue, and the next writer takes every waiting
//! push into ONE transaction (one commit, one fsync). Nobody is answered
//! before the transaction holding their work has committed.
//!
//! There is no writer thread: whoever gets the writer lock leads. The
//! invariant that makes this work: a leader drains the queue only while
//! holding the writer lock, and fills every slot it drained before letting
//! go. So a thread that gets the lock either finds its answer already in its
//! slot, or its job still in the queue.

use std::sync::{Arc, Mutex, MutexGuard};

/// Where one job's answer is left for its submitter.
type Slot<R> = Arc<Mutex<Option<R>>>;

pub(crate) struct GroupCommit<J, R> {
    queue: Mutex<Vec<(J, Slot<R>)>>,
}

impl<J, R> Default for GroupCommit<J, R> {
    fn default() -> Self {
        GroupCommit {
            queue: Mutex::new(Vec::new()),
        }
    }
}

/// A panic can only interrupt work whose transaction then rolls back, so a
/// poisoned lock guards nothing half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<J, R> GroupCommit<J, R> {
    /// Runs `job` in a batch with every job waiting when the writer lock
    /// comes free. `write` gets the batch in arrival order and answers each
    /// job in the same order; if it panics or answers too few, the
    /// unanswered get `interrupted()`.
    pub fn submit<W>(
        &self,
        writer: &Mutex<W>,
        job: J,
        write: impl FnOnce(&mut W, Vec<J>) -> Vec<R>,
        interrupted: impl Fn() -> R,
    ) -> R {
        let mine: Slot<R> = Arc::new(Mutex::new(None));
        lock(&self.queue).push((job, mine.clone()));
        let mut writer = lock(writer);
        if let Some(answer) = lock(&mine).take() {
            return answer; // an earlier leader wrote it
        }
        let (jobs, slots): (Vec<J>, Vec<Slot<R>>) =
            std::mem::take(&mut *lock(&self.queue)).into_iter().unzip();
        let answer_all = AnswerAll {
            slots,
            interrupted: &interrupted,
        };
        let answers = write(&mut writer, jobs);
        for (slot, answer) in answer_all.slots.iter().zip(answers) {
            *lock(slot) = Some(answer);
        }
        drop(answer_all);
        drop(writer);
        let answer = lock(&mine).take();
        answer.unwrap_or_else(interrupted)
    }
}

/// Leaves `interrupted()` in every slot still empty when dropped, also
/// while unwinding, so no submitter is left without an answer.
struct AnswerAll<'a, R> {
    slots: Vec<Slot<R>>,
    interrupted: &'a dyn Fn() -> R,
}

impl<R> Drop for AnswerAll<'_, R> {
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut slot = lock(slot);
            if slot.is_none() {
                *slot = Some((self.interrupted)());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_lone_job_is_written_by_its_own_submitter() {
        let group = GroupCommit::<u32, u32>::default();
        let writer = Mutex::new(Vec::<Vec<u32>>::new());
        let answer = group.submit(
            &writer,
            7,
            |w, jobs| {
                w.push(jobs.clone());
                jobs.iter().map(|j| j * 10).collect()
            },
            || 0,
        );
        assert_eq!(answer, 70);
        assert_eq!(*writer.lock().unwrap(), vec![vec![7]]);
    }

    #[test]
    fn jobs_waiting_for_the_writer_share_one_batch_and_each_gets_its_own_answer() {
        let group = Arc::new(GroupCommit::<u32, u32>::default());
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let threads = 16;
        let start = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads as u32)
            .map(|i| {
                let (group, batches, start) = (group.clone(), batches.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    group.submit(
                        &batches,
                        i,
                        |w, jobs| {
                            // Slow enough that the others queue up behind it.
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            w.push(jobs.clone());
                            jobs.iter().map(|j| j + 100).collect()
                        },
                        || u32::MAX,
                    )
                })
            })
            .collect();
        let mut answers: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        answers.sort();
        assert_eq!(answers, (100..100 + threads as u32).collect::<Vec<_>>());
        let batches = batches.lock().unwrap();
        let mut written: Vec<u32> = batches.iter().flatten().copied().collect();
        written.sort();
        assert_eq!(
            written,
            (0..threads as u32).collect::<Vec<_>>(),
            "each job written once"
        );
        assert!(
            batches.len() < threads,
            "16 jobs arriving together took {} batches",
            batches.len()
        );
    }

    #[test]
    fn a_writer_that_panics_leaves_every_job_of_its_batch_an_answer() {
        let group = Arc::new(GroupCommit::<u32, Result<u32, String>>::default());
        let writer = Arc::new(Mutex::new(()));
        // Hold the writer so that both jobs queue, then let them race for it.
        let held = writer.lock().unwrap();
        let handles: Vec<_> = (0..2u32)
            .map(|i| {
                let (group, writer) = (group.clone(), writer.clone());
                std::thread::spawn(move || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        group.submit(
                            &writer,
                            i,
                            |_, _| panic!("disk on fire"),
                            || Err("interrupted".to_string()),
                        )
                    }))
                })
            })
            .collect();
        while group.queue.lock().unwrap().len() < 2 {
            std::thread::yield_now();
        }
        drop(held);
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        // One leader panicked; the other job got an answer instead of hanging.
        assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 1);
        let answered: Vec<_> = outcomes.into_iter().filter_map(|o| o.ok()).collect();
        assert_eq!(answered, vec![Err("interrupted".to_string())]);
    }
}
