//! Compaction of the master dataset, one body per property run on both backends (local folder
//! and the S3 test server, `PRISM_TEST_S3_ENDPOINT`; without it the tests fail, never skip):
//! small files become one visible file per (partition, UTC day) with exactly the same rows;
//! uncommitted files are left alone; at every step of a pass, including a crash between any
//! two, a reader sees every row exactly once; superseded files go only after the grace period;
//! files of the previous hour layout and first schema are read and migrated.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{backends, put_hour_file, quote, sorted, visible_rows, without_extras, DAY, HOUR, T0, TOPIC};
use prism_batch::compaction::{compact, plan, remove_superseded, write_compacted};
use prism_batch::master::{day_start, ArchivedQuote, MasterDataset};

const LONG: Duration = Duration::from_secs(3600);

/// Writes, for partitions 0 and 1 and two UTC days, `flushes` small files of 3 rows each, as
/// the archiver would (offsets ascending per partition, each flush one file per day). Returns
/// the rows and the next offset of each partition.
async fn small_files(master: &MasterDataset, flushes: i64) -> (Vec<ArchivedQuote>, Vec<i64>) {
    let mut rows = Vec::new();
    let mut next = vec![0i64, 0];
    for flush in 0..flushes {
        for p in 0..2 {
            for day in 0..2 {
                let file: Vec<ArchivedQuote> = (0..3)
                    .map(|i| {
                        let offset = next[p as usize] + i;
                        quote(p, offset, T0 + day * DAY + flush * 1000 + i, 1_000_000 + offset as i128)
                    })
                    .collect();
                next[p as usize] += 3;
                master.write_file(TOPIC, file.clone()).await.expect("write small file");
                rows.extend(file);
            }
        }
    }
    (sorted(rows), next)
}

/// Visible files per (partition, day).
async fn visible_per_group(master: &MasterDataset) -> BTreeMap<(i32, i64), usize> {
    let mut groups = BTreeMap::new();
    for f in master.list_files(TOPIC).await.expect("list") {
        *groups.entry((f.partition, f.day_start_ms)).or_default() += 1;
    }
    groups
}

#[tokio::test]
async fn small_files_become_one_visible_file_per_partition_and_day_and_uncommitted_ones_stay() {
    for (name, master, _dir) in backends("compact") {
        let (committed_rows, committed) = small_files(&master, 4).await;
        // A flush after the last commit (the archiver crashed before committing): not compacted.
        let uncommitted = vec![quote(0, committed[0], T0 + 5_000, 1), quote(0, committed[0] + 1, T0 + 5_001, 2)];
        let uncommitted_at = master.write_file(TOPIC, uncommitted.clone()).await.expect("write");
        let everything = sorted([committed_rows.clone(), uncommitted.clone()].concat());
        assert_eq!(master.list_files(TOPIC).await.expect("list").len(), 17, "{name}");

        let report = compact(&master, TOPIC, &committed, LONG).await.expect("compact");
        assert_eq!(
            (report.groups_compacted, report.files_merged, report.files_removed, report.groups_skipped),
            (4, 16, 0, 0),
            "{name}: {report:?}"
        );
        assert_eq!(report.rows_written, committed_rows.len() as u64, "{name}");
        assert!(report.bytes_written > 0, "{name}");
        let day1 = day_start(T0);
        let visible = master.list_files(TOPIC).await.expect("list");
        let names: Vec<&str> = visible.iter().map(|f| f.location.as_ref()).collect();
        assert_eq!(
            names,
            vec![
                "quotes/date=2024-01-02/prism.quotes-0-0-20.parquet",
                uncommitted_at.as_ref(),
                "quotes/date=2024-01-02/prism.quotes-1-0-20.parquet",
                "quotes/date=2024-01-03/prism.quotes-0-3-23.parquet",
                "quotes/date=2024-01-03/prism.quotes-1-3-23.parquet",
            ],
            "{name}: one file per (partition, day), the uncommitted file apart"
        );
        assert_eq!(visible[0].day_start_ms, day1, "{name}");
        assert_eq!(visible_rows(&master).await, everything, "{name}: the same rows, each once");
        let merged = master.read_file::<prism_core::event::Quote>(&visible[0]).await.expect("read merged");
        assert!(merged.windows(2).all(|w| w[0].pos.offset < w[1].pos.offset), "{name}: sorted by offset");
        // Within the grace period the small files are still there, superseded.
        assert_eq!(master.list_all_files(TOPIC).await.expect("list all").len(), 21, "{name}");

        // A rerun has nothing to do; a zero grace then removes the superseded files.
        let again = compact(&master, TOPIC, &committed, LONG).await.expect("rerun");
        assert_eq!((again.groups_compacted, again.files_removed), (0, 0), "{name}: {again:?}");
        let cleanup = compact(&master, TOPIC, &committed, Duration::ZERO).await.expect("cleanup");
        assert_eq!((cleanup.groups_compacted, cleanup.files_removed), (0, 16), "{name}: {cleanup:?}");
        assert_eq!(master.list_all_files(TOPIC).await.expect("list all").len(), 5, "{name}");
        assert_eq!(visible_rows(&master).await, everything, "{name}");

        // The archiver's restart removes the uncommitted file only, never a compacted one.
        assert_eq!(master.remove_uncommitted(TOPIC, &committed).await.expect("remove"), 1, "{name}");
        assert_eq!(visible_rows(&master).await, committed_rows, "{name}");

        // New flushes on top of a compacted file: merged again into one larger file, and with a
        // zero grace the files it supersedes (the earlier merged one too) go in the same pass.
        let more = vec![quote(0, committed[0], T0 + 9_000, 5), quote(0, committed[0] + 1, T0 + 9_001, 6)];
        master.write_file(TOPIC, more.clone()).await.expect("write more");
        let committed = vec![committed[0] + 2, committed[1]];
        let report = compact(&master, TOPIC, &committed, Duration::ZERO).await.expect("compact more");
        assert_eq!((report.groups_compacted, report.files_merged, report.files_removed), (1, 2, 2), "{name}: {report:?}");
        assert_eq!(visible_per_group(&master).await.values().copied().collect::<Vec<_>>(), vec![1, 1, 1, 1], "{name}");
        assert_eq!(master.list_all_files(TOPIC).await.expect("list all").len(), 4, "{name}");
        assert_eq!(visible_rows(&master).await, sorted([committed_rows.clone(), more].concat()), "{name}");
    }
}

#[tokio::test]
async fn a_crash_between_any_two_steps_loses_and_duplicates_nothing() {
    for (name, master, _dir) in backends("crash") {
        let (rows, committed) = small_files(&master, 3).await;
        let check = |step: &'static str| {
            let (master, rows) = (master.clone(), rows.clone());
            async move { assert_eq!(visible_rows(&master).await, rows, "{name}: after {step}") }
        };
        check("writing the small files").await;

        let groups = plan(&master, TOPIC, &committed).await.expect("plan");
        assert_eq!(groups.len(), 4, "{name}");
        assert!(groups.iter().all(|g| g.files.len() == 3), "{name}: {groups:?}");
        // Crash in (a) after the first group: that group reads merged, the others small.
        let first = write_compacted(&master, TOPIC, &groups[0]).await.expect("write first");
        assert_eq!(first.location, groups[0].target(TOPIC), "{name}");
        check("merging one group").await;
        // Rerunning step (a) of a group whose file exists writes the same file.
        write_compacted(&master, TOPIC, &groups[0]).await.expect("rewrite first");
        check("merging it again").await;
        // Crash after (a): every merged file written, no small file removed.
        for g in &groups[1..] {
            write_compacted(&master, TOPIC, g).await.expect("write");
        }
        check("merging every group").await;
        assert_eq!(master.list_files(TOPIC).await.expect("list").len(), 4, "{name}");
        assert_eq!(master.list_all_files(TOPIC).await.expect("list all").len(), 16, "{name}");
        assert!(plan(&master, TOPIC, &committed).await.expect("plan").is_empty(), "{name}: nothing left to merge");
        // Step (b) within the grace period removes nothing.
        assert_eq!(remove_superseded(&master, TOPIC, LONG).await.expect("remove"), 0, "{name}");
        check("a removal within the grace period").await;
        // Crash in the middle of (b): some superseded files are gone, others not.
        let superseded: Vec<_> =
            master.list_all_files(TOPIC).await.expect("list all").into_iter().filter(|f| f.superseded_since.is_some()).collect();
        assert_eq!(superseded.len(), 12, "{name}");
        for f in superseded.iter().step_by(2) {
            master.location().delete(&f.file.location).await.expect("delete");
        }
        check("removing half of the superseded files").await;
        // The rerun completes the pass.
        let report = compact(&master, TOPIC, &committed, LONG).await.expect("rerun");
        assert_eq!((report.groups_compacted, report.files_removed), (0, 0), "{name}: {report:?}");
        let report = compact(&master, TOPIC, &committed, Duration::ZERO).await.expect("rerun without grace");
        assert_eq!((report.groups_compacted, report.files_removed), (0, 6), "{name}: {report:?}");
        check("the rerun").await;
        assert_eq!(master.list_all_files(TOPIC).await.expect("list all").len(), 4, "{name}: only the merged files are left");
    }
}

#[tokio::test]
async fn superseded_files_are_removed_once_their_first_superseding_file_is_older_than_the_grace() {
    for (name, master, _dir) in backends("grace") {
        let (mut rows, mut committed) = small_files(&master, 2).await;
        compact(&master, TOPIC, &committed, LONG).await.expect("first pass");
        tokio::time::sleep(Duration::from_millis(2_600)).await;
        // A new flush, merged with the first merged file into a second one: the small files of
        // the first pass are now superseded by both merged files, the first merged file only by
        // the brand-new second one.
        let more = vec![quote(0, committed[0], T0 + 20_000, 7)];
        master.write_file(TOPIC, more.clone()).await.expect("write");
        committed[0] += 1;
        rows = sorted([rows, more].concat());
        let report = compact(&master, TOPIC, &committed, LONG).await.expect("second pass");
        assert_eq!(report.groups_compacted, 1, "{name}: {report:?}");
        let before = master.list_all_files(TOPIC).await.expect("list all");
        assert_eq!(before.len(), 8 + 4 + 1 + 1, "{name}: small, first merged, new small, second merged");

        let removed = remove_superseded(&master, TOPIC, Duration::from_millis(1_500)).await.expect("remove");
        assert_eq!(removed, 8, "{name}: the first pass's small files, superseded 2.6 s ago");
        let left: Vec<String> = master.list_all_files(TOPIC).await.expect("list all").iter().map(|f| f.file.location.to_string()).collect();
        assert!(left.contains(&format!("quotes/date=2024-01-02/{TOPIC}-0-0-8.parquet")), "{name}: the first merged file stays: {left:?}");
        assert!(left.contains(&format!("quotes/date=2024-01-02/{TOPIC}-0-12-12.parquet")), "{name}: so does the new small one: {left:?}");
        assert_eq!(left.len(), 6, "{name}: {left:?}");
        assert_eq!(visible_rows(&master).await, rows, "{name}");
    }
}

#[tokio::test]
async fn hour_layout_files_of_the_first_schema_are_listed_read_and_compacted_into_day_files() {
    for (name, master, _dir) in backends("legacy") {
        // One flush of the first archiver wrote one file per hour: their offset ranges interleave.
        let (h14, h15) = (T0 - 30 * 60_000, T0 + 30 * 60_000);
        let hour14 = vec![quote(0, 0, h14, 1_000_000), quote(0, 2, h14 + 1, 1_000_002)];
        let hour15 = vec![quote(0, 1, h15, 1_000_001)];
        let next_day = vec![quote(0, 5, T0 + DAY - 5 * HOUR, 1_000_005)];
        let at14 = put_hour_file(&master, &hour14).await;
        put_hour_file(&master, &hour15).await;
        put_hour_file(&master, &next_day).await;
        assert_eq!(at14.as_ref(), "quotes/date=2024-01-02/hour=14/prism.quotes-0-0-2.parquet", "{name}");
        // The new archiver went on with day files.
        let day_rows = vec![quote(0, 3, T0 + HOUR, 1_000_003), quote(0, 4, T0 + HOUR + 1, 1_000_004)];
        master.write_file(TOPIC, day_rows.clone()).await.expect("write day file");

        let files = master.list_files(TOPIC).await.expect("list");
        let parts: Vec<(i64, i64, i64, Option<u32>)> =
            files.iter().map(|f| (f.day_start_ms, f.first_offset, f.last_offset, f.legacy_hour)).collect();
        let day1 = day_start(T0);
        assert_eq!(
            parts,
            vec![(day1, 0, 2, Some(14)), (day1, 1, 1, Some(15)), (day1, 3, 4, None), (day1 + DAY, 5, 5, Some(9))],
            "{name}: every file listed, none taken for superseded"
        );
        assert_eq!(master.read_file(&files[0]).await.expect("read"), without_extras(&hour14), "{name}: the first schema reads");
        let expected = sorted([without_extras(&hour14), without_extras(&hour15), day_rows, without_extras(&next_day)].concat());
        assert_eq!(visible_rows(&master).await, expected, "{name}");

        // Compaction migrates them, a lone hour file included.
        let report = compact(&master, TOPIC, &[6], Duration::ZERO).await.expect("compact");
        assert_eq!((report.groups_compacted, report.files_merged, report.files_removed), (2, 4, 4), "{name}: {report:?}");
        let files = master.list_all_files(TOPIC).await.expect("list all");
        let names: Vec<(String, Option<u32>)> = files.iter().map(|f| (f.file.location.to_string(), f.file.legacy_hour)).collect();
        assert_eq!(
            names,
            vec![
                (format!("quotes/date=2024-01-02/{TOPIC}-0-0-4.parquet"), None),
                (format!("quotes/date=2024-01-03/{TOPIC}-0-5-5.parquet"), None),
            ],
            "{name}"
        );
        assert_eq!(visible_rows(&master).await, expected, "{name}: the same rows, each once");
        assert!(plan(&master, TOPIC, &[6]).await.expect("plan").is_empty(), "{name}: day files are final");
    }
}
