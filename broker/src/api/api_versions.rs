//! ApiVersions: which APIs and versions the broker answers.

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::broker::Broker;
use crate::controller::features;

fn api_list() -> Vec<ApiVersion> {
    super::supported_apis()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

/// The supported APIs, and (v3+, where the codec writes them) the features this broker
/// supports and the levels the cluster finalized, with the metadata offset they are as of,
/// as Kafka's `ApiVersionsResponse` carries them (`kafka-features.sh describe` reads these).
pub(super) fn handle(broker: &Broker, _request: &ApiVersionsRequest) -> ApiVersionsResponse {
    let image = broker.image();
    let supported = features::FEATURES
        .iter()
        .map(|f| {
            SupportedFeatureKey::default()
                .with_name(str_bytes(f.name))
                .with_min_version(f.min)
                .with_max_version(f.max)
        })
        .collect();
    let finalized = features::finalized(&image.features)
        .into_iter()
        .map(|(name, level)| {
            FinalizedFeatureKey::default()
                .with_name(str_bytes(name))
                .with_min_version_level(level)
                .with_max_version_level(level)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_api_keys(api_list())
        .with_supported_features(supported)
        .with_finalized_features_epoch(broker.quorum.applied_offset())
        .with_finalized_features(finalized)
}

/// The v0 answer to an ApiVersions request newer than the broker knows.
pub(super) fn unsupported() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn the_advertised_list_is_exactly_the_supported_apis() {
        let keys: Vec<i16> = api_list().iter().map(|a| a.api_key).collect();
        assert!(keys.contains(&(ApiKey::Produce as i16)));
        assert!(keys.contains(&(ApiKey::Fetch as i16)));
        assert!(keys.contains(&(ApiKey::AddPartitionsToTxn as i16)));
        assert!(!keys.contains(&(ApiKey::ConsumerGroupHeartbeat as i16)));
        for api in &api_list() {
            let key = ApiKey::try_from(api.api_key).expect("known key");
            assert!(super::super::supported_versions(key).is_some());
        }
    }
}
