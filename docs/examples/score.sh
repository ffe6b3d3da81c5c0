polyhead score --repo model_repo --model scenes --input photos/ --output scored/
