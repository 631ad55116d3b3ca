-- Orders and revenue per day and country. Revenue counts orders that were neither
-- cancelled nor returned; `orders` counts them all.
select cast(ordered_at as date) as order_date,
       country,
       count(*) as orders,
       coalesce(sum(amount) filter (where status not in ('cancelled', 'returned')), 0) as revenue
from silver.orders
group by all
order by order_date, country
