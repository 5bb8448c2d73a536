select * from {{ ref('stg_use_cases') }}
