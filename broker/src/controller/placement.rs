//! Replica placement for new topics and partitions: spread replicas and preferred leaders
//! evenly over the live brokers, and each partition's replicas over as many racks as there are.

use std::collections::BTreeMap;

use super::image::MetadataImage;

/// Why replicas could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replication factor {replication_factor} is larger than the {available} available brokers")]
pub struct PlacementError {
    pub replication_factor: i16,
    pub available: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    replicas: usize,
    leaders: usize,
}

/// Replica lists for `count` new partitions with `replication_factor` replicas each, over the
/// live brokers of `image`, counting the replicas and leaders they already hold.
///
/// Each partition's preferred leader is the broker with the fewest leaders; its other
/// replicas go to the brokers with the fewest replicas, a new rack before a rack already used
/// by this partition. Ties go to the lower broker id, so the result is deterministic.
pub fn place(
    image: &MetadataImage,
    count: usize,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    let live: Vec<(i32, Option<String>)> = image
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.shutting_down)
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    let wanted = usize::try_from(replication_factor).unwrap_or(0);
    if wanted == 0 || wanted > live.len() {
        return Err(PlacementError {
            replication_factor,
            available: live.len(),
        });
    }
    let mut load: BTreeMap<i32, Load> = live.iter().map(|(id, _)| (*id, Load::default())).collect();
    for topic in image.topics.values() {
        for partition in &topic.partitions {
            for (i, replica) in partition.replicas.iter().enumerate() {
                if let Some(l) = load.get_mut(replica) {
                    l.replicas += 1;
                    if i == 0 {
                        l.leaders += 1;
                    }
                }
            }
        }
    }
    let rack_of: BTreeMap<i32, Option<String>> = live.iter().cloned().collect();
    let mut placements = Vec::with_capacity(count);
    for _ in 0..count {
        let mut replicas: Vec<i32> = Vec::with_capacity(wanted);
        let leader = load
            .iter()
            .min_by_key(|(id, l)| (l.leaders, l.replicas, **id))
            .map(|(id, _)| *id)
            .ok_or(PlacementError {
                replication_factor,
                available: 0,
            })?;
        replicas.push(leader);
        while replicas.len() < wanted {
            let used_racks: Vec<&Option<String>> =
                replicas.iter().filter_map(|r| rack_of.get(r)).collect();
            let next = load
                .iter()
                .filter(|(id, _)| !replicas.contains(id))
                .min_by_key(|(id, l)| {
                    let rack = rack_of.get(id).and_then(|r| r.as_ref());
                    let rack_used = rack.is_some() && used_racks.iter().any(|u| u.as_ref() == rack);
                    (rack_used, l.replicas, **id)
                })
                .map(|(id, _)| *id)
                .ok_or(PlacementError {
                    replication_factor,
                    available: live.len(),
                })?;
            replicas.push(next);
        }
        for (i, replica) in replicas.iter().enumerate() {
            if let Some(l) = load.get_mut(replica) {
                l.replicas += 1;
                if i == 0 {
                    l.leaders += 1;
                }
            }
        }
        placements.push(replicas);
    }
    Ok(placements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::{BrokerRegistration, MetadataCommand};
    use proptest::prelude::*;

    fn image(racks: &[Option<&str>]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (i, rack) in racks.iter().enumerate() {
            image.apply(&MetadataCommand::RegisterBroker(BrokerRegistration {
                id: i as i32 + 1,
                incarnation: uuid::Uuid::nil(),
                host: "h".into(),
                port: 1,
                rack: rack.map(str::to_string),
                fenced: false,
                shutting_down: false,
                endpoints: Vec::new(),
            }));
        }
        image
    }

    #[test]
    fn a_replication_factor_above_the_brokers_is_refused() {
        let err = place(&image(&[None, None]), 1, 3).expect_err("too few brokers");
        assert_eq!(err.available, 2);
    }

    #[test]
    fn each_partition_spans_every_rack_it_can() {
        let image = image(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        for replicas in place(&image, 12, 3).expect("placed") {
            let mut racks: Vec<_> = replicas
                .iter()
                .map(|r| image.brokers[r].rack.clone())
                .collect();
            racks.sort();
            racks.dedup();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
    }

    proptest! {
        #[test]
        fn replicas_and_leaders_are_spread_within_one(brokers in 1usize..8, partitions in 1usize..40, rf in 1i16..4) {
            prop_assume!((rf as usize) <= brokers);
            let image = image(&vec![None; brokers]);
            let placed = place(&image, partitions, rf).expect("placed");
            let mut replicas = vec![0usize; brokers];
            let mut leaders = vec![0usize; brokers];
            for list in &placed {
                prop_assert_eq!(list.len(), rf as usize);
                let mut distinct = list.clone();
                distinct.sort();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), list.len());
                leaders[(list[0] - 1) as usize] += 1;
                for r in list {
                    replicas[(*r - 1) as usize] += 1;
                }
            }
            let spread = |v: &[usize]| v.iter().max().copied().unwrap_or(0) - v.iter().min().copied().unwrap_or(0);
            prop_assert!(spread(&leaders) <= 1, "leaders {:?}", leaders);
            prop_assert!(spread(&replicas) <= 1, "replicas {:?}", replicas);
        }
    }
}
