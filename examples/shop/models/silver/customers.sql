-- Customers, typed: names trimmed, e-mail trimmed and lower-cased, country upper-case.
-- Should the shop deliver a customer again, the newest delivery wins: the full build keeps
-- it here, an incremental run merges it over the old row by customer_id (customers.yml).
select customer_id,
       trim(name) as name,
       lower(trim(email)) as email,
       upper(country) as country,
       cast(signup_date as date) as signup_date
from bronze.customers
qualify row_number() over (
    partition by customer_id
    order by _ingested_at desc, _origin desc, _origin_row desc
) = 1
order by customer_id
