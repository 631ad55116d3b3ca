-- The product catalog with decimal prices (SQLite keeps them as text).
select product_id,
       name,
       lower(category) as category,
       cast(price as decimal(10, 2)) as price
from bronze.products
order by product_id
