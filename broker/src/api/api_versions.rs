//! ApiVersions: which APIs and versions the broker answers.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

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

pub(super) fn handle(_request: &ApiVersionsRequest, _version: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_api_keys(api_list())
        .with_finalized_features_epoch(-1)
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
        let response = handle(&ApiVersionsRequest::default(), 3);
        let keys: Vec<i16> = response.api_keys.iter().map(|a| a.api_key).collect();
        assert!(keys.contains(&(ApiKey::Produce as i16)));
        assert!(keys.contains(&(ApiKey::Fetch as i16)));
        assert!(!keys.contains(&(ApiKey::AddPartitionsToTxn as i16)));
        for api in &response.api_keys {
            let key = ApiKey::try_from(api.api_key).expect("known key");
            assert!(super::super::supported_versions(key).is_some());
        }
    }
}
