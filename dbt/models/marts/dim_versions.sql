select * from {{ ref('stg_versions') }}
