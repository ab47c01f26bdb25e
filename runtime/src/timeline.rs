//! The per-unit busy timeline of a run, for the HTML report, accumulated while the run goes so that
//! no per-instruction events are kept.
//!
//! Time is cut into [`BINS`] bins of `bin_cycles` cycles each (a power of two, doubled — merging
//! neighbouring bins — whenever an instruction ends past the last bin, so the bins always cover the
//! run). For each core×unit lane and bin the timeline keeps the busy cycles (the `start..free`
//! intervals of the lane's instructions overlapping the bin) and the [`TOP`] locations with the
//! most busy cycles in it. Locations are debug-map indices (0 = no location). Memory is
//! `BINS × TOP` entries per lane that did any work, whatever the run's length.

/// Number of time bins.
pub const BINS: usize = 800;
/// Locations tracked per bin (the dominant one is drawn).
pub const TOP: usize = 3;

/// One time bin of one lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bin {
    /// Busy cycles in this bin.
    pub busy: u64,
    /// `(location, busy cycles)` of the busiest locations seen in this bin, unsorted; empty slots
    /// have 0 cycles. Approximate when more than [`TOP`] locations share a bin.
    pub top: [(u32, u64); TOP],
}

impl Bin {
    fn add(&mut self, loc: u32, cycles: u64) {
        self.busy = self.busy.saturating_add(cycles);
        if let Some(slot) = self.top.iter_mut().find(|s| s.1 > 0 && s.0 == loc) {
            slot.1 = slot.1.saturating_add(cycles);
            return;
        }
        let min = self.top.iter_mut().min_by_key(|s| s.1).expect("TOP > 0");
        if min.1 < cycles {
            *min = (loc, cycles);
        }
    }

    fn merge(a: &Bin, b: &Bin) -> Bin {
        let mut all: Vec<(u32, u64)> = Vec::with_capacity(2 * TOP);
        for s in a.top.iter().chain(&b.top).copied().filter(|s| s.1 > 0) {
            match all.iter_mut().find(|x| x.0 == s.0) {
                Some(x) => x.1 = x.1.saturating_add(s.1),
                None => all.push(s),
            }
        }
        all.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let mut top = [(0u32, 0u64); TOP];
        for (slot, v) in top.iter_mut().zip(all) {
            *slot = v;
        }
        Bin {
            busy: a.busy.saturating_add(b.busy),
            top,
        }
    }

    /// The location with the most busy cycles in this bin, if any.
    pub fn dominant(&self) -> Option<u32> {
        self.top
            .iter()
            .filter(|s| s.1 > 0)
            .max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0)))
            .map(|s| s.0)
    }
}

/// Busy time per lane (`core * 4 + Unit::index()`) and time bin.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// Cycles per bin.
    pub bin_cycles: u64,
    /// Per lane, `BINS` bins, or `None` for a lane that never worked.
    pub lanes: Vec<Option<Vec<Bin>>>,
    /// Location names by index (0 = no location).
    pub locs: Vec<String>,
}

impl Timeline {
    /// An empty timeline for `cores` cores.
    pub fn new(cores: usize, locs: Vec<String>) -> Timeline {
        Timeline {
            bin_cycles: 1,
            lanes: vec![None; cores * 4],
            locs,
        }
    }

    /// Adds the busy interval `start..end` of `lane`, charged to location `loc`.
    pub fn add(&mut self, lane: usize, loc: u32, start: u64, end: u64) {
        if end <= start || lane >= self.lanes.len() {
            return;
        }
        while end > self.bin_cycles.saturating_mul(BINS as u64) {
            self.coarsen();
        }
        let w = self.bin_cycles;
        let row = self.lanes[lane].get_or_insert_with(|| vec![Bin::default(); BINS]);
        let mut b = (start / w) as usize;
        while b < BINS && (b as u64) * w < end {
            let lo = start.max(b as u64 * w);
            let hi = end.min((b as u64 + 1).saturating_mul(w));
            if hi > lo {
                row[b].add(loc, hi - lo);
            }
            b += 1;
        }
    }

    /// Doubles the bin width, merging neighbouring bins.
    fn coarsen(&mut self) {
        for row in self.lanes.iter_mut().flatten() {
            let merged: Vec<Bin> = (0..BINS)
                .map(|i| match (row.get(2 * i), row.get(2 * i + 1)) {
                    (Some(a), Some(b)) => Bin::merge(a, b),
                    (Some(a), None) => *a,
                    _ => Bin::default(),
                })
                .collect();
            *row = merged;
        }
        self.bin_cycles = self.bin_cycles.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_run_and_keep_the_dominant_location() {
        let mut t = Timeline::new(1, vec!["-".into(), "a".into(), "b".into()]);
        t.add(1, 1, 0, 10);
        t.add(1, 2, 10, 12);
        assert_eq!(t.bin_cycles, 1);
        t.add(1, 2, 12, 5000);
        assert!(t.bin_cycles * BINS as u64 >= 5000);
        assert_eq!(t.bin_cycles, 8);
        let row = t.lanes[1].as_ref().unwrap();
        let total: u64 = row.iter().map(|b| b.busy).sum();
        assert_eq!(total, 5000);
        assert_eq!(row[0].dominant(), Some(1));
        assert_eq!(row[100].dominant(), Some(2));
        assert!(t.lanes[0].is_none());
    }

    #[test]
    fn memory_is_bounded_by_bins_not_by_events() {
        let mut t = Timeline::new(2, vec!["-".into()]);
        for i in 0..100_000u64 {
            t.add((i % 8) as usize, (i % 50) as u32, i * 3, i * 3 + 2);
        }
        for row in t.lanes.iter().flatten() {
            assert_eq!(row.len(), BINS);
        }
    }
}
