//! Batches: seeded order, every image once per epoch, exact resumption, and assembled inputs.

use engine::Rng;
use mae::data::augment::{Augment, augment_into};
use mae::data::loader::{Batcher, make_batch};
use mae::data::synthetic::generate;

fn batches(b: &mut Batcher, n: usize) -> Vec<Vec<usize>> {
    (0..n).map(|_| b.next_batch().to_vec()).collect()
}

#[test]
fn the_same_seed_gives_the_same_order_and_another_seed_a_different_one() {
    let a = batches(&mut Batcher::new(100, 8, 5, false).unwrap(), 30);
    let b = batches(&mut Batcher::new(100, 8, 5, false).unwrap(), 30);
    let c = batches(&mut Batcher::new(100, 8, 6, false).unwrap(), 30);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn every_index_comes_exactly_once_per_epoch_in_a_new_order_each_epoch() {
    let mut b = Batcher::new(10, 4, 1, false).unwrap();
    assert_eq!(b.batches_per_epoch(), 3);
    let mut orders = Vec::new();
    for epoch in 0..3 {
        let mut seen = Vec::new();
        for k in 0..3 {
            let batch = b.next_batch().to_vec();
            assert_eq!(batch.len(), if k < 2 { 4 } else { 2 }, "the last batch is short without drop_last");
            assert_eq!(b.epoch(), epoch);
            seen.extend(batch);
        }
        assert_eq!(b.position(), 10);
        orders.push(seen.clone());
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
    assert!(orders[0] != orders[1] && orders[1] != orders[2]);
}

#[test]
fn drop_last_serves_only_full_batches() {
    let mut b = Batcher::new(10, 4, 1, true).unwrap();
    assert_eq!(b.batches_per_epoch(), 2);
    for i in 0..9 {
        assert_eq!(b.next_batch().len(), 4);
        assert_eq!(b.epoch(), i / 2);
    }
}

#[test]
fn a_restored_batcher_continues_with_exactly_the_same_batches() {
    for drop_last in [false, true] {
        let mut original = Batcher::new(23, 5, 42, drop_last).unwrap();
        // Stop mid-epoch, at an epoch's end, and past several epochs.
        for stop in [3, 4, 5, 13] {
            let mut run = original.clone();
            batches(&mut run, stop);
            let state = run.state();
            let expected = batches(&mut run, 12);
            let mut resumed = Batcher::restore(&state, 23).unwrap();
            assert_eq!((resumed.epoch(), resumed.position()), (state.epoch, state.position as usize));
            assert_eq!(batches(&mut resumed, 12), expected, "stop {stop}, drop_last {drop_last}");
        }
        original.next_batch();
    }
}

#[test]
fn impossible_batching_and_a_mismatched_restore_are_clear_errors() {
    let msg = Batcher::new(10, 16, 0, true).unwrap_err().to_string();
    assert!(msg.contains("16") && msg.contains("10 images"), "{msg}");
    assert!(Batcher::new(0, 4, 0, false).is_err());
    assert!(Batcher::new(10, 0, 0, false).is_err());
    let state = Batcher::new(10, 4, 0, false).unwrap().state();
    let msg = Batcher::restore(&state, 11).unwrap_err().to_string();
    assert!(msg.contains("10 images") && msg.contains("11"), "{msg}");
    let damaged = mae::data::BatcherState { position: 99, ..state };
    assert!(Batcher::restore(&damaged, 10).is_err());
}

#[test]
fn make_batch_stacks_augmented_images_with_their_labels() {
    let set = generate(20, 16, 3, 1);
    let norm = set.channel_stats();
    let idx = [3, 0, 17];
    let (x, y) = make_batch(&set, &idx, 12, &Augment::mae(), &norm, &mut Rng::new(1));
    assert_eq!(x.len(), 3 * 3 * 12 * 12);
    let labels = set.labels.as_ref().unwrap();
    assert_eq!(y, Some(vec![labels[3], labels[0], labels[17]]));
    assert!(x.iter().all(|v| v.is_finite()));
    // Deterministic from the generator's state; without augmentation, just the normalized images.
    let (x2, _) = make_batch(&set, &idx, 12, &Augment::mae(), &norm, &mut Rng::new(1));
    assert_eq!(x, x2);
    let (plain, _) = make_batch(&set, &idx, 16, &Augment::none(), &norm, &mut Rng::new(1));
    let mut want = vec![0f32; 3 * 16 * 16];
    norm.normalize_image(set.image(17), &mut want);
    assert_eq!(plain[2 * 768..], want[..]);
    // Unlabelled sets give no labels.
    let unlabelled = mae::data::ImageSet { labels: None, classes: vec![], ..set.take(2) };
    assert_eq!(make_batch(&unlabelled, &[1], 8, &Augment::mae(), &norm, &mut Rng::new(1)).1, None);
}

#[test]
fn peeking_shows_the_next_batch_without_moving_on() {
    for (len, batch, drop_last) in [(10, 3, true), (10, 3, false), (9, 3, true), (4, 4, false), (5, 7, false)] {
        let mut b = Batcher::new(len, batch, 11, drop_last).unwrap();
        for _ in 0..12 {
            let peeked = b.peek_next();
            assert_eq!(b.peek_next(), peeked, "peeking twice gives the same batch");
            assert_eq!(b.next_batch(), &peeked[..], "len {len}, batch {batch}, drop_last {drop_last}");
        }
    }
}

#[test]
fn make_batch_is_the_image_by_image_augmentation_whatever_the_thread_count() {
    let set = generate(12, 20, 3, 4);
    let norm = set.channel_stats();
    let idx = [5, 1, 11, 1, 0, 7, 3];
    let mut rng = Rng::new(9);
    let mut want = vec![0f32; idx.len() * 3 * 24 * 24];
    for (dst, &i) in want.chunks_exact_mut(3 * 24 * 24).zip(&idx) {
        augment_into(set.image(i), 3, 20, 20, dst, 24, &Augment::mae(), &norm, &mut rng);
    }
    for threads in [1, 2, 3, 8] {
        let mut r = Rng::new(9);
        let (x, _) =
            engine::cpu::parallel::with_threads(threads, || make_batch(&set, &idx, 24, &Augment::mae(), &norm, &mut r));
        assert_eq!(x, want, "{threads} threads");
        // The generator ends where the image-by-image draws leave it.
        assert_eq!(r.uniform(), rng.clone().uniform(), "{threads} threads");
    }
}
