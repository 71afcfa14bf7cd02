//! The write path: appends (in `S`-sized transactions), evictions per [`WhenFull`], and
//! the retry at the file cap (invariants 3 and 4 of the module doc).

use std::collections::BTreeMap;

use rusqlite::{CachedStatement, params};

use super::sql::{self, EvictedRun, Need};
use super::{
    NewRecord, Rejected, SEQ_BLOCK, Store, StoreConfig, StoreError, StreamStats, WhenFull,
    accounted, is_full, write_seq_file,
};

impl Store {
    /// Appends records; each gets its sequence or the reason it was refused, and refusals
    /// are counted. One transaction per `S` bytes of records (see the module doc).
    pub fn append(
        &mut self,
        recs: &[NewRecord<'_>],
    ) -> Result<Vec<Result<u64, Rejected>>, StoreError> {
        for r in recs {
            if !self.cfg.streams.contains_key(r.stream) {
                return Err(StoreError::UnknownStream(r.stream.to_owned()));
            }
        }
        let mut out = Vec::with_capacity(recs.len());
        let r = self.append_chunks(recs, &mut out);
        self.log_summary_if_due();
        r.map(|()| out)
    }

    fn append_chunks(
        &mut self,
        mut recs: &[NewRecord<'_>],
        out: &mut Vec<Result<u64, Rejected>>,
    ) -> Result<(), StoreError> {
        while !recs.is_empty() {
            let (chunk, rest) = recs.split_at(self.chunk_len(recs));
            recs = rest;
            match self.append_tx(chunk) {
                Ok(v) => out.extend(v),
                Err(StoreError::Db(e)) if is_full(&e) => {
                    // The file cap: retried record by record (invariant 4).
                    for r in chunk {
                        out.push(self.append_at_cap(r)?);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// How many of `recs` go into the next transaction: at most `S` accounted bytes, at
    /// least one record.
    fn chunk_len(&self, recs: &[NewRecord<'_>]) -> usize {
        let mut bytes = 0;
        for (i, r) in recs.iter().enumerate() {
            bytes += accounted(r.body.len());
            if bytes > self.layout.step {
                return i.max(1);
            }
        }
        recs.len()
    }

    /// One record after its transaction hit the file cap (or a full disk): evict what
    /// the policy allows, a slice at a time, and retry; refuse once nothing is left.
    fn append_at_cap(&mut self, r: &NewRecord<'_>) -> Result<Result<u64, Rejected>, StoreError> {
        // As much as the record accounts for; a retry that still finds no room evicts the
        // next oldest. Evicting needs a page or two itself (the eviction log may grow):
        // if even that fails, the slice doubles, up to `S`.
        let mut slice = accounted(r.body.len());
        loop {
            let why = match self.append_tx(std::slice::from_ref(r)) {
                Ok(mut v) => return Ok(v.pop().expect("one outcome per record")),
                Err(StoreError::Db(e)) if is_full(&e) => e.to_string(),
                Err(e) => return Err(e),
            };
            if self.cfg.when_full == WhenFull::EvictLowestOldest {
                match self.evict_tx(Need::UpTo(slice), self.cfg.streams[r.stream]) {
                    Ok(0) => {}
                    Ok(_) => continue,
                    Err(StoreError::Db(e)) if is_full(&e) && slice < self.layout.step => {
                        slice = (slice * 2).min(self.layout.step);
                        continue;
                    }
                    Err(StoreError::Db(e)) if is_full(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            sql::bump(&self.conn, &format!("rejected:{}", r.stream), 1)?;
            stream_stats(&mut self.streams, r.stream).rejected += 1;
            self.summary.refused(r.stream, 1);
            return Ok(Err(Rejected::DiskFull(why)));
        }
    }

    fn append_tx(
        &mut self,
        recs: &[NewRecord<'_>],
    ) -> Result<Vec<Result<u64, Rejected>>, StoreError> {
        let snapshot = (self.next_seq, self.used, self.streams.clone());
        let r = self.append_inner(recs);
        if r.is_err() {
            // Rolled back: forget in-memory changes too.
            (self.next_seq, self.used, self.streams) = snapshot;
        }
        r
    }

    fn append_inner(
        &mut self,
        recs: &[NewRecord<'_>],
    ) -> Result<Vec<Result<u64, Rejected>>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(recs.len());
        let mut evictions: Vec<EvictedRun> = Vec::new();
        // Refusals are summed per stream and counted once per transaction.
        let mut rejected: BTreeMap<&str, u64> = BTreeMap::new();
        let levels = eviction_levels(&self.cfg, &self.streams);
        let budget = self.layout.records;
        {
            let mut inserts: Vec<(&str, CachedStatement<'_>)> = Vec::new();
            for r in recs {
                let prio = self.cfg.streams[r.stream];
                let size = accounted(r.body.len());
                let verdict = if size > self.layout.max_record {
                    Err(Rejected::TooLarge {
                        size,
                        budget: self.layout.max_record,
                    })
                } else if self.used + size > budget && self.cfg.when_full == WhenFull::RejectNew {
                    Err(Rejected::Full {
                        stream: r.stream.to_owned(),
                    })
                } else {
                    let need = (self.used + size).saturating_sub(budget);
                    let freed = if need > 0 {
                        let n = Need::AllOrNothing(need);
                        sql::evict(&tx, &self.sql, n, &levels, prio, &mut evictions)?
                    } else {
                        0
                    };
                    if freed < need {
                        Err(Rejected::Full {
                            stream: r.stream.to_owned(),
                        })
                    } else {
                        self.used -= freed;
                        Ok(())
                    }
                };
                match verdict {
                    Err(e) => {
                        *rejected.entry(r.stream).or_default() += 1;
                        stream_stats(&mut self.streams, r.stream).rejected += 1;
                        out.push(Err(e));
                    }
                    Ok(()) => {
                        let seq = self.next_seq;
                        if seq > self.reserved_until {
                            self.reserved_until = seq - 1 + SEQ_BLOCK;
                            write_seq_file(&self.seq_file, self.reserved_until).map_err(
                                |source| StoreError::Io {
                                    path: self.seq_file.clone(),
                                    source,
                                },
                            )?;
                        }
                        let i = match inserts.iter().position(|(s, _)| *s == r.stream) {
                            Some(i) => i,
                            None => {
                                let q = tx.prepare_cached(&self.sql[r.stream].insert)?;
                                inserts.push((r.stream, q));
                                inserts.len() - 1
                            }
                        };
                        inserts[i].1.execute(params![
                            seq as i64,
                            r.ts_ms as i64,
                            size as i64,
                            r.body,
                        ])?;
                        self.next_seq += 1;
                        self.used += size;
                        let e = stream_stats(&mut self.streams, r.stream);
                        e.appended += 1;
                        e.records += 1;
                        e.bytes += size;
                        out.push(Ok(seq));
                    }
                }
            }
        }
        for (stream, n) in &rejected {
            sql::bump(&tx, &format!("rejected:{stream}"), *n)?;
        }
        for run in &evictions {
            let e = stream_stats(&mut self.streams, &run.stream);
            e.evicted += run.count;
            e.records -= run.count;
            e.bytes -= run.bytes;
        }
        tx.commit()?;
        for run in &evictions {
            self.summary
                .evicted(&run.stream, run.count, run.bytes, run.first, run.last);
        }
        for (stream, n) in rejected {
            self.summary.refused(stream, n);
        }
        Ok(out)
    }

    /// Evicts per `need` among records with priority ≤ `max_priority` (lowest, oldest
    /// first), in its own transaction. Returns bytes freed.
    pub(super) fn evict_tx(&mut self, need: Need, max_priority: u8) -> Result<u64, StoreError> {
        let levels = eviction_levels(&self.cfg, &self.streams);
        let tx = self.conn.transaction()?;
        let mut runs = Vec::new();
        let freed = sql::evict(&tx, &self.sql, need, &levels, max_priority, &mut runs)?;
        if freed > 0 {
            sql::save_next_seq(&tx, self.next_seq)?;
        }
        tx.commit()?;
        for run in &runs {
            let e = stream_stats(&mut self.streams, &run.stream);
            e.evicted += run.count;
            e.records -= run.count;
            e.bytes -= run.bytes;
            self.used -= run.bytes;
            self.summary
                .evicted(&run.stream, run.count, run.bytes, run.first, run.last);
        }
        Ok(freed)
    }
}

/// Every known stream grouped by configured priority, lowest first. Streams that have
/// records but are no longer configured come first: nothing will send them.
fn eviction_levels(
    cfg: &StoreConfig,
    streams: &BTreeMap<String, StreamStats>,
) -> Vec<(u8, Vec<String>)> {
    let mut levels: BTreeMap<(u8, bool), Vec<String>> = BTreeMap::new();
    for name in cfg.streams.keys().chain(streams.keys()) {
        let key = match cfg.streams.get(name) {
            Some(&p) => (p, true),
            None => (0, false),
        };
        let level = levels.entry(key).or_default();
        if !level.contains(name) {
            level.push(name.clone());
        }
    }
    levels.into_iter().map(|((p, _), v)| (p, v)).collect()
}

/// The stream's figures, allocating its name only the first time.
pub(super) fn stream_stats<'a>(
    streams: &'a mut BTreeMap<String, StreamStats>,
    name: &str,
) -> &'a mut StreamStats {
    if !streams.contains_key(name) {
        streams.insert(name.to_owned(), StreamStats::default());
    }
    streams.get_mut(name).expect("inserted above")
}
